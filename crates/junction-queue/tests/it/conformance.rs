//! The shared conformance suite, run against the embedded broker.

junction_queue::conformance_suite!(crate::support::embedded);
