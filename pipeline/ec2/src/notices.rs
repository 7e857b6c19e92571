//! Spot interruption notices, read from a queue of EC2 events.
//!
//! Two minutes before EC2 reclaims a spot instance it emits an "EC2 Spot Instance
//! Interruption Warning" event (and, earlier, an "EC2 Instance Rebalance Recommendation"
//! when the risk rises). The usual way to receive them is an EventBridge rule that forwards
//! them to an SQS queue; [`Sqs`] reads that queue through aws-sdk-sqs. The actuator holds a
//! `Box<dyn Notices>`: it acknowledges (deletes) a message only once it has dealt with it, so
//! a notice that could not be acted on comes back after the visibility timeout.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use wfe_contract::{Error, Result};

use crate::sdk::{self, Caller, Ec2Settings, Static};

/// What an event says will happen to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum NoticeKind {
    /// "EC2 Spot Instance Interruption Warning": reclaimed in two minutes.
    Interruption,
    /// "EC2 Instance Rebalance Recommendation": at elevated risk of interruption.
    Rebalance,
}

impl NoticeKind {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// One event about one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub instance_id: String,
    pub kind: NoticeKind,
    /// The event's time (ms since the epoch).
    pub time_ms: i64,
    /// `terminate`, `stop` or `hibernate` for interruptions.
    pub action: Option<String>,
}

/// A message taken from the queue: its notice, or why it is not one.
#[derive(Debug, Clone)]
pub struct Received {
    /// Handle to acknowledge (delete) it with.
    pub receipt: String,
    pub message_id: String,
    /// How often the queue has handed it out, this time included.
    pub receive_count: u32,
    pub notice: std::result::Result<Notice, String>,
}

/// A source of notices.
pub trait Notices: Send {
    /// Messages waiting now (none is not an error).
    fn receive(&mut self) -> Result<Vec<Received>>;
    /// Deletes a message that has been dealt with.
    fn ack(&mut self, receipt: &str) -> Result<()>;
}

/// Reads an EventBridge event (as EventBridge delivers it to SQS: the event JSON is the
/// message body).
pub fn parse_event(body: &str) -> std::result::Result<Notice, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let detail_type = v["detail-type"]
        .as_str()
        .ok_or("no `detail-type`: not an EventBridge event")?;
    let kind = match detail_type {
        "EC2 Spot Instance Interruption Warning" => NoticeKind::Interruption,
        "EC2 Instance Rebalance Recommendation" => NoticeKind::Rebalance,
        other => return Err(format!("event `{other}` is not a spot interruption notice")),
    };
    let instance_id = v["detail"]["instance-id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("no `detail.instance-id`")?
        .to_string();
    let time = v["time"].as_str().ok_or("no `time`")?;
    let time_ms = aws_sdk_sqs::primitives::DateTime::from_str(
        time,
        aws_sdk_sqs::primitives::DateTimeFormat::DateTime,
    )
    .ok()
    .and_then(|t| t.to_millis().ok())
    .ok_or_else(|| format!("`time` {time:?} is not an RFC 3339 time"))?;
    Ok(Notice {
        instance_id,
        kind,
        time_ms,
        action: v["detail"]["instance-action"].as_str().map(str::to_string),
    })
}

/// An SQS queue of EC2 events.
pub struct Sqs {
    client: Client,
    caller: Caller,
    queue_url: String,
    /// Seconds a received message stays hidden from other receivers.
    visibility_s: i32,
}

impl Sqs {
    /// Connects with the standard credential chain.
    pub fn connect(s: &Ec2Settings, queue_url: &str) -> Result<Self> {
        Self::build(s, queue_url, None)
    }

    /// Connects with fixed credentials (tests against moto).
    pub fn with_credentials(
        s: &Ec2Settings,
        queue_url: &str,
        key: &str,
        secret: &str,
    ) -> Result<Self> {
        Self::build(
            s,
            queue_url,
            Some(Static::new(key, secret, None, None, "wfe-static")),
        )
    }

    fn build(s: &Ec2Settings, queue_url: &str, creds: Option<Static>) -> Result<Self> {
        if queue_url.is_empty() {
            return Err(Error::config("interruptions.queue_url", "is empty"));
        }
        let (caller, conf) = sdk::connect(s, creds)?;
        Ok(Self {
            client: Client::new(&conf),
            caller,
            queue_url: queue_url.to_string(),
            visibility_s: 30,
        })
    }

    /// Sends one message (tests put EC2 events on the queue with it).
    pub fn send(&mut self, body: &str) -> Result<()> {
        let op = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body);
        self.caller
            .call(op.send())
            .map(|_| ())
            .map_err(|e| sdk::external("sqs:SendMessage", e))
    }

    /// Messages still on the queue (visible or not), as SQS approximates it.
    pub fn depth(&mut self) -> Result<i64> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let op = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible);
        let out = self
            .caller
            .call(op.send())
            .map_err(|e| sdk::external("sqs:GetQueueAttributes", e))?;
        let n = |a: A| {
            out.attributes()
                .and_then(|m| m.get(&a))
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        Ok(n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible))
    }

    /// Creates a queue and returns its URL (tests).
    pub fn create_queue(s: &Ec2Settings, name: &str, key: &str, secret: &str) -> Result<String> {
        let (mut caller, conf) =
            sdk::connect(s, Some(Static::new(key, secret, None, None, "wfe-static")))?;
        let client = Client::new(&conf);
        let out = caller
            .call(client.create_queue().queue_name(name).send())
            .map_err(|e| sdk::external("sqs:CreateQueue", e))?;
        out.queue_url()
            .map(str::to_string)
            .ok_or_else(|| Error::External {
                service: "sqs:CreateQueue".into(),
                message: "no queue URL in the answer".into(),
                retryable: false,
            })
    }

    /// Shorter visibility timeout (tests).
    pub fn visibility(mut self, s: i32) -> Self {
        self.visibility_s = s;
        self
    }
}

impl Notices for Sqs {
    fn receive(&mut self) -> Result<Vec<Received>> {
        let op = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(self.visibility_s)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
        let out = self
            .caller
            .call(op.send())
            .map_err(|e| sdk::external("sqs:ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receipt = m.receipt_handle()?.to_string();
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    receipt,
                    message_id: m.message_id().unwrap_or("?").to_string(),
                    receive_count,
                    notice: m
                        .body()
                        .ok_or_else(|| "empty message".to_string())
                        .and_then(parse_event),
                })
            })
            .collect())
    }

    fn ack(&mut self, receipt: &str) -> Result<()> {
        let op = self
            .client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt);
        self.caller
            .call(op.send())
            .map(|_| ())
            .map_err(|e| sdk::external("sqs:DeleteMessage", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARNING: &str = r#"{"version":"0","id":"1e5527d7-bb36-4607-3370-4164db56a40e",
        "detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2",
        "account":"123456789012","time":"2026-11-24T06:00:00Z","region":"us-east-1",
        "resources":["arn:aws:ec2:us-east-1b:instance/i-0b662ef9931388ba0"],
        "detail":{"instance-id":"i-0b662ef9931388ba0","instance-action":"terminate"}}"#;

    #[test]
    fn reads_the_events_ec2_sends_and_says_what_is_wrong_with_others() {
        let n = parse_event(WARNING).unwrap();
        assert_eq!(n.instance_id, "i-0b662ef9931388ba0");
        assert_eq!(n.kind, NoticeKind::Interruption);
        assert_eq!(n.time_ms, 1_795_500_000_000);
        assert_eq!(n.action.as_deref(), Some("terminate"));
        let rebalance = WARNING.replace(
            "EC2 Spot Instance Interruption Warning",
            "EC2 Instance Rebalance Recommendation",
        );
        assert_eq!(parse_event(&rebalance).unwrap().kind, NoticeKind::Rebalance);
        let other = WARNING.replace(
            "EC2 Spot Instance Interruption Warning",
            "EC2 Instance State-change Notification",
        );
        assert!(parse_event(&other).unwrap_err().contains("State-change"));
        assert!(parse_event("{").unwrap_err().starts_with("not JSON"));
        assert!(
            parse_event("{\"detail-type\": \"EC2 Spot Instance Interruption Warning\"}")
                .unwrap_err()
                .contains("instance-id")
        );
        let bad_time = WARNING.replace("2026-11-24T06:00:00Z", "yesterday");
        assert!(parse_event(&bad_time).unwrap_err().contains("yesterday"));
    }
}
