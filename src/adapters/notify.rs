//! The notify port on SNS (the alert topic, for people) and EventBridge (an event other systems
//! can route: source `rotor`, detail-type `Rotation Failed`).

use async_trait::async_trait;

use crate::adapters::secretsmanager::aws_error;
use crate::adapters::ApiCallCounter;
use crate::error::{Result, RotorError};
use crate::ports::notify::{Alert, Notifier};

/// Event source and detail-type of Rotor's EventBridge events.
pub const EVENT_SOURCE: &str = "rotor";
pub const FAILED_DETAIL_TYPE: &str = "Rotation Failed";

/// Alerts to an SNS topic and/or an EventBridge bus; either may be unset.
#[derive(Debug, Clone)]
pub struct AwsNotifier {
    sns: aws_sdk_sns::Client,
    events: aws_sdk_eventbridge::Client,
    topic_arn: Option<String>,
    event_bus: Option<String>,
}

impl AwsNotifier {
    pub fn new(
        sdk: &aws_config::SdkConfig,
        topic_arn: Option<String>,
        event_bus: Option<String>,
        counter: Option<ApiCallCounter>,
    ) -> Self {
        let mut sns = aws_sdk_sns::config::Builder::from(sdk);
        let mut ev = aws_sdk_eventbridge::config::Builder::from(sdk);
        if let Some(c) = counter {
            sns = sns.interceptor(c.clone());
            ev = ev.interceptor(c);
        }
        AwsNotifier {
            sns: aws_sdk_sns::Client::from_conf(sns.build()),
            events: aws_sdk_eventbridge::Client::from_conf(ev.build()),
            topic_arn,
            event_bus,
        }
    }

    /// Creates (or finds: the call is idempotent) the SNS topic `name`, returning its ARN.
    pub async fn create_topic(&self, name: &str) -> Result<String> {
        let out = self
            .sns
            .create_topic()
            .name(name)
            .send()
            .await
            .map_err(|e| aws_error("CreateTopic", e))?;
        out.topic_arn()
            .map(str::to_string)
            .ok_or_else(|| RotorError::Config("CreateTopic returned no ARN".into()))
    }
}

#[async_trait]
impl Notifier for AwsNotifier {
    async fn alert(&self, alert: &Alert) -> Result<()> {
        let body = serde_json::to_string(alert)
            .map_err(|e| RotorError::Config(format!("alert serialisation: {e}")))?;
        let mut errors = Vec::new();
        let mut delivered = 0;
        if let Some(topic) = &self.topic_arn {
            let subject = format!("Rotor: rotation of {} failed", alert.identity_id);
            match self
                .sns
                .publish()
                .topic_arn(topic)
                .subject(subject.chars().take(99).collect::<String>())
                .message(&body)
                .send()
                .await
            {
                Ok(_) => delivered += 1,
                Err(e) => errors.push(aws_error("Publish", e)),
            }
        }
        if let Some(bus) = &self.event_bus {
            let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source(EVENT_SOURCE)
                .detail_type(FAILED_DETAIL_TYPE)
                .event_bus_name(bus)
                .resources(&alert.secret_arn)
                .detail(&body)
                .build();
            match self.events.put_events().entries(entry).send().await {
                Ok(out) if out.failed_entry_count() == 0 => delivered += 1,
                Ok(_) => errors.push(RotorError::Aws {
                    operation: "PutEvents",
                    code: "FailedEntry".into(),
                    message: "the event bus rejected the event".into(),
                    retryable: true,
                }),
                Err(e) => errors.push(aws_error("PutEvents", e)),
            }
        }
        match (delivered, errors.pop()) {
            (0, Some(e)) => Err(e),
            (_, e) => {
                if let Some(e) = e {
                    tracing::warn!(error_type = e.error_type(), error = %e, "an alert channel failed");
                }
                Ok(())
            }
        }
    }
}
