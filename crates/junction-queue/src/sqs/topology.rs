//! The SNS topic, subscriber queues and dead-letter queues of an SQS queue:
//! created when first needed (by a subscribing lane, or a publish naming a
//! new subscriber) and remembered.

use aws_sdk_sqs::types::QueueAttributeName;

use super::{names, storage, visibility_secs, Shared, RETENTION_SECS};
use crate::types::*;

impl Shared {
    /// Creates queue `name` (or finds it) with `attrs`; returns its URL.
    async fn create_queue(
        &self,
        name: &str,
        attrs: &[(QueueAttributeName, String)],
    ) -> Result<String, QueueError> {
        let mut req = self.sqs.create_queue().queue_name(name);
        for (k, v) in attrs {
            req = req.attributes(k.clone(), v);
        }
        match req.send().await {
            Ok(out) => Ok(out.queue_url().unwrap_or_default().to_owned()),
            // Created earlier with other settings (a changed visibility timeout): use it.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_name_exists()) =>
            {
                self.sqs
                    .get_queue_url()
                    .queue_name(name)
                    .send()
                    .await
                    .map(|o| o.queue_url().unwrap_or_default().to_owned())
                    .map_err(|e| storage("finding an sqs queue", e))
            }
            Err(e) => Err(storage("creating an sqs queue", e)),
        }
    }

    /// The SNS topic of `topic`.
    pub(super) async fn topic_arn(&self, topic: &str) -> Result<String, QueueError> {
        if let Some(arn) = self.topics.lock().get(topic) {
            return Ok(arn.clone());
        }
        let mut req =
            self.sns
                .create_topic()
                .name(names::topic(&self.cfg.prefix, topic, self.cfg.fifo));
        if self.cfg.fifo {
            req = req.attributes("FifoTopic", "true");
        }
        let arn = req
            .send()
            .await
            .map_err(|e| storage("creating an sns topic", e))?
            .topic_arn()
            .unwrap_or_default()
            .to_owned();
        self.topics.lock().insert(topic.to_owned(), arn.clone());
        Ok(arn)
    }

    /// The queue of `sub`, created and subscribed to the topic if missing.
    pub(super) async fn queue_url(&self, topic: &str, sub: &str) -> Result<String, QueueError> {
        let pair = (topic.to_owned(), sub.to_owned());
        if let Some(url) = self.queues.lock().get(&pair) {
            return Ok(url.clone());
        }
        let arn = self.topic_arn(topic).await?;
        let name = names::queue(&self.cfg.prefix, topic, sub, self.cfg.fifo);
        let mut attrs = vec![
            (
                QueueAttributeName::VisibilityTimeout,
                visibility_secs(self.cfg.visibility_timeout).to_string(),
            ),
            (
                QueueAttributeName::MessageRetentionPeriod,
                RETENTION_SECS.into(),
            ),
        ];
        if self.cfg.fifo {
            attrs.push((QueueAttributeName::FifoQueue, "true".into()));
        }
        // SNS may send to the queue only from this topic. The policy goes in
        // with the queue's creation: a policy set afterwards can take up to a
        // minute to apply, and SNS drops (does not retry) a copy it is not
        // allowed to deliver.
        let policy = |queue_arn: &str| {
            serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": arn}},
                }],
            })
            .to_string()
        };
        if let Some(expected) = queue_arn_for(&arn, &name) {
            attrs.push((QueueAttributeName::Policy, policy(&expected)));
        }
        let url = self.create_queue(&name, &attrs).await?;
        let queue_arn = self.queue_arn(&url).await?;
        let policy = policy(&queue_arn);
        // Also for a queue an earlier version created without it.
        self.sqs
            .set_queue_attributes()
            .queue_url(&url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .map_err(|e| storage("allowing sns to send to an sqs queue", e))?;
        self.sns
            .subscribe()
            .topic_arn(&arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .attributes("RawMessageDelivery", "true")
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| storage("subscribing an sqs queue to an sns topic", e))?;
        self.dlq_url(topic, sub).await?;
        self.queues.lock().insert(pair, url.clone());
        Ok(url)
    }

    /// The dead-letter queue of `sub`, created if missing.
    pub(super) async fn dlq_url(&self, topic: &str, sub: &str) -> Result<String, QueueError> {
        let pair = (topic.to_owned(), sub.to_owned());
        if let Some(url) = self.dlqs.lock().get(&pair) {
            return Ok(url.clone());
        }
        let name = names::dlq(&self.cfg.prefix, topic, sub);
        let url = self
            .create_queue(
                &name,
                &[(
                    QueueAttributeName::MessageRetentionPeriod,
                    RETENTION_SECS.into(),
                )],
            )
            .await?;
        self.dlqs.lock().insert(pair, url.clone());
        Ok(url)
    }

    async fn queue_arn(&self, url: &str) -> Result<String, QueueError> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| storage("reading an sqs queue's arn", e))?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| {
                storage(
                    "reading an sqs queue's arn",
                    std::io::Error::other("no QueueArn attribute"),
                )
            })
    }

    /// Every queue URL under the prefix.
    pub(super) async fn list_queues(&self) -> Result<Vec<String>, QueueError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sqs
                .list_queues()
                .queue_name_prefix(format!("{}-", self.cfg.prefix))
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| storage("listing sqs queues", e))?;
            out.extend(page.queue_urls().iter().cloned());
            match page.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(out),
            }
        }
    }
}

/// The ARN queue `name` gets in the account and region of the SNS topic `topic_arn`.
fn queue_arn_for(topic_arn: &str, name: &str) -> Option<String> {
    let mut parts = topic_arn.split(':');
    let (_arn, partition, _sns, region, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    Some(format!("arn:{partition}:sqs:{region}:{account}:{name}"))
}
