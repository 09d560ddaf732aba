//! A Kafka-protocol broker of one test: tansu, in memory, started as a child
//! process and killed when dropped.
//!
//! Kafka clients connect to the address a broker *advertises*, not only to the
//! bootstrap one, so a [`crate::TcpGate`] playing an outage must be that
//! advertised address: start the gate towards a free port first, then the
//! broker on that port advertising the gate.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running private broker.
pub struct PrivateKafka {
    child: Child,
}

impl PrivateKafka {
    /// A free loopback port for [`PrivateKafka::start`].
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// Starts `tansu` (or `$TANSU`) listening on `port` and advertising
    /// `advertised`; returns once it accepts connections.
    pub fn start(port: u16, advertised: SocketAddr) -> Self {
        let tansu = std::env::var("TANSU").unwrap_or_else(|_| "tansu".to_owned());
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {tansu} (scripts/services installs it): {e}"));
        let broker = Self { child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return broker;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tansu did not listen on {port} within 10 s");
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
