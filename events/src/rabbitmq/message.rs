//! CloudEvents as AMQP 0-9-1 messages, in binary content mode.
//!
//! The mapping follows the draft "RabbitMQ Protocol Binding for CloudEvents"
//! (version 1.0.2-wip, published with Knative's eventing-rabbitmq):
//!
//! - the event data is the message body, unchanged;
//! - `datacontenttype` is the AMQP `content-type` property;
//! - every other attribute and every extension is a message header named
//!   `ce-<name>`, for example `ce-id`, `ce-type` or `ce-traceparent`.
//!
//! Beyond the draft, `datacontenttype` is also written as the header
//! `ce-datacontenttype` (the draft's own example does the same), because a
//! headers exchange routes on headers only and a Trigger may filter on it.
//! Header values are AMQP long strings that hold the attribute's text form,
//! the same text as in the HTTP binary mode. So, as over HTTP, a boolean or
//! integer extension comes back as a string.
//!
//! Reading also accepts structured mode (`content-type:
//! application/cloudevents+json`) and header values of other AMQP types
//! (short strings, booleans, integers), so messages from other producers can
//! be read.

use cloudevents::{
    AttributesReader, Event,
    event::SpecVersion,
    message::{
        BinaryDeserializer, BinarySerializer, Encoding, Error as MessageError,
        MessageAttributeValue, MessageDeserializer, StructuredDeserializer, StructuredSerializer,
    },
};
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::Error;

/// Prefix of the headers that carry CloudEvent attributes and extensions.
pub const HEADER_PREFIX: &str = "ce-";

/// The header that carries `specversion`. Its presence marks a binary-mode event.
const SPEC_VERSION_HEADER: &str = "ce-specversion";

/// The header copy of `datacontenttype`, which is read only when the message
/// has no `content-type` property.
const DATA_CONTENT_TYPE_HEADER: &str = "ce-datacontenttype";

/// Media type prefix of structured-mode messages.
const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents";

/// AMQP `delivery-mode` value that makes RabbitMQ write the message to disk.
pub const PERSISTENT: u8 = 2;

/// An event encoded for publishing: headers and properties, and the body.
#[derive(Debug, Clone)]
pub struct AmqpMessage {
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

/// Returns the header name of a CloudEvent attribute or extension.
pub fn header_name(attribute: &str) -> String {
    format!("{HEADER_PREFIX}{attribute}")
}

/// Encodes `event` in binary mode as a persistent message.
///
/// # Errors
///
/// [`Error::InvalidEvent`] when an attribute name is too long for an AMQP
/// header name (255 bytes).
pub fn encode(event: &Event) -> Result<AmqpMessage, Error> {
    let id = event.id().to_owned();
    let message = event
        .clone()
        .deserialize_binary(MessageSerializer::default())
        .map_err(|err| Error::InvalidEvent(err.to_string()))?;
    let mut properties = message
        .properties
        .with_delivery_mode(PERSISTENT)
        .with_headers(message.headers);
    if let Ok(id) = ShortString::try_new(id) {
        properties = properties.with_message_id(id);
    }
    Ok(AmqpMessage {
        properties,
        body: message.body,
    })
}

/// Decodes a message in binary or structured mode.
///
/// # Errors
///
/// [`Error::InvalidEvent`] when the message is not a valid CloudEvent.
pub fn decode(properties: &BasicProperties, body: Vec<u8>) -> Result<Event, Error> {
    let message = ReceivedMessage { properties, body };
    MessageDeserializer::into_event(message).map_err(|err| Error::InvalidEvent(err.to_string()))
}

fn other_error(text: String) -> MessageError {
    MessageError::Other {
        source: text.into(),
    }
}

// === impl MessageSerializer ===

/// Collects the headers and body of one event.
#[derive(Default)]
struct MessageSerializer {
    headers: FieldTable,
    properties: BasicProperties,
}

struct SerializedMessage {
    headers: FieldTable,
    properties: BasicProperties,
    body: Vec<u8>,
}

impl MessageSerializer {
    fn insert(mut self, name: &str, value: String) -> cloudevents::message::Result<Self> {
        let key = ShortString::try_new(header_name(name))
            .map_err(|err| other_error(format!("attribute {name}: {err}")))?;
        self.headers
            .insert(key, AMQPValue::LongString(LongString::from(value)));
        Ok(self)
    }

    fn finish(self, body: Vec<u8>) -> SerializedMessage {
        SerializedMessage {
            headers: self.headers,
            properties: self.properties,
            body,
        }
    }
}

impl BinarySerializer<SerializedMessage> for MessageSerializer {
    fn set_spec_version(self, spec_version: SpecVersion) -> cloudevents::message::Result<Self> {
        self.insert("specversion", spec_version.to_string())
    }

    fn set_attribute(
        mut self,
        name: &str,
        value: MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        let text = value.to_string();
        if name == "datacontenttype" {
            let content_type = ShortString::try_new(text.clone())
                .map_err(|err| other_error(format!("datacontenttype: {err}")))?;
            self.properties = self.properties.with_content_type(content_type);
        }
        self.insert(name, text)
    }

    fn set_extension(
        self,
        name: &str,
        value: MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        self.insert(name, value.to_string())
    }

    fn end_with_data(self, bytes: Vec<u8>) -> cloudevents::message::Result<SerializedMessage> {
        Ok(self.finish(bytes))
    }

    fn end(self) -> cloudevents::message::Result<SerializedMessage> {
        Ok(self.finish(Vec::new()))
    }
}

// === impl ReceivedMessage ===

/// A consumed message, read back into an event.
struct ReceivedMessage<'a> {
    properties: &'a BasicProperties,
    body: Vec<u8>,
}

impl ReceivedMessage<'_> {
    fn header(&self, name: &str) -> Option<&AMQPValue> {
        self.properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(name))
    }

    fn content_type(&self) -> Option<&str> {
        self.properties
            .content_type()
            .as_ref()
            .map(ShortString::as_str)
    }
}

/// Turns a header value into an attribute value. AMQP types other than
/// strings, booleans and integers are rejected.
fn attribute_value(
    name: &str,
    value: &AMQPValue,
) -> cloudevents::message::Result<MessageAttributeValue> {
    let text = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec())
            .map(MessageAttributeValue::String)
            .map_err(|_| other_error(format!("header {name} is not UTF-8")))
    };
    match value {
        AMQPValue::LongString(value) => text(value.as_bytes()),
        AMQPValue::ShortString(value) => Ok(MessageAttributeValue::String(value.to_string())),
        AMQPValue::Boolean(value) => Ok(MessageAttributeValue::Boolean(*value)),
        AMQPValue::ShortShortInt(value) => Ok(MessageAttributeValue::Integer((*value).into())),
        AMQPValue::ShortShortUInt(value) => Ok(MessageAttributeValue::Integer((*value).into())),
        AMQPValue::ShortInt(value) => Ok(MessageAttributeValue::Integer((*value).into())),
        AMQPValue::ShortUInt(value) => Ok(MessageAttributeValue::Integer((*value).into())),
        AMQPValue::LongInt(value) => Ok(MessageAttributeValue::Integer((*value).into())),
        AMQPValue::LongUInt(value) => Ok(MessageAttributeValue::Integer((*value).into())),
        AMQPValue::LongLongInt(value) => Ok(MessageAttributeValue::Integer(*value)),
        other => Err(other_error(format!(
            "header {name} has the AMQP type {}, which is not a CloudEvent attribute type",
            other.get_type()
        ))),
    }
}

impl BinaryDeserializer for ReceivedMessage<'_> {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(
        self,
        mut visitor: V,
    ) -> cloudevents::message::Result<R> {
        let spec_version = match self.header(SPEC_VERSION_HEADER) {
            Some(value) => attribute_value(SPEC_VERSION_HEADER, value)?.to_string(),
            None => return Err(MessageError::WrongEncoding {}),
        };
        let spec_version = SpecVersion::try_from(spec_version.as_str())?;
        let attributes = spec_version.attribute_names();
        visitor = visitor.set_spec_version(spec_version)?;

        let content_type = self.content_type().map(str::to_owned);
        if let Some(headers) = self.properties.headers() {
            for (key, value) in headers.inner() {
                let Some(name) = key.as_str().strip_prefix(HEADER_PREFIX) else {
                    continue;
                };
                if key.as_str() == SPEC_VERSION_HEADER
                    || (key.as_str() == DATA_CONTENT_TYPE_HEADER && content_type.is_some())
                {
                    continue;
                }
                let value = attribute_value(key.as_str(), value)?;
                visitor = if attributes.contains(&name) {
                    visitor.set_attribute(name, value)?
                } else {
                    visitor.set_extension(name, value)?
                };
            }
        }
        if let Some(content_type) = content_type {
            visitor = visitor.set_attribute(
                "datacontenttype",
                MessageAttributeValue::String(content_type),
            )?;
        }

        if self.body.is_empty() {
            visitor.end()
        } else {
            visitor.end_with_data(self.body)
        }
    }
}

impl StructuredDeserializer for ReceivedMessage<'_> {
    fn deserialize_structured<R: Sized, V: StructuredSerializer<R>>(
        self,
        visitor: V,
    ) -> cloudevents::message::Result<R> {
        visitor.set_structured_event(self.body)
    }
}

impl MessageDeserializer for ReceivedMessage<'_> {
    fn encoding(&self) -> Encoding {
        if self
            .content_type()
            .is_some_and(|value| value.starts_with(STRUCTURED_CONTENT_TYPE))
        {
            Encoding::STRUCTURED
        } else if self.header(SPEC_VERSION_HEADER).is_some() {
            Encoding::BINARY
        } else {
            Encoding::UNKNOWN
        }
    }
}

#[cfg(test)]
mod tests {
    use cloudevents::{EventBuilder, EventBuilderV10};

    use super::*;

    fn sample() -> Event {
        EventBuilderV10::new()
            .id("0b5c6a1e")
            .source("/upload")
            .ty("dev.audioalchemist.video.uploaded.v1")
            .subject("job/42")
            .time("2026-01-02T03:04:05Z")
            .extension("traceparent", "00-abc-def-01")
            .extension("attempt", 3i64)
            .data("application/json", serde_json::json!({ "job_id": 42 }))
            .build()
            .unwrap()
    }

    fn header_text(message: &AmqpMessage, name: &str) -> Option<String> {
        message
            .properties
            .headers()
            .as_ref()?
            .inner()
            .get(name)
            .map(|value| match value {
                AMQPValue::LongString(text) => text.to_string(),
                other => panic!("{name} is not a long string: {other:?}"),
            })
    }

    #[test]
    fn encode_writes_prefixed_headers() {
        let message = encode(&sample()).unwrap();
        assert_eq!(header_text(&message, "ce-id").as_deref(), Some("0b5c6a1e"));
        assert_eq!(
            header_text(&message, "ce-specversion").as_deref(),
            Some("1.0")
        );
        assert_eq!(
            header_text(&message, "ce-type").as_deref(),
            Some("dev.audioalchemist.video.uploaded.v1")
        );
        assert_eq!(
            header_text(&message, "ce-traceparent").as_deref(),
            Some("00-abc-def-01")
        );
        assert_eq!(header_text(&message, "ce-attempt").as_deref(), Some("3"));
        assert_eq!(
            header_text(&message, "ce-datacontenttype").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            message
                .properties
                .content_type()
                .as_ref()
                .map(ShortString::as_str),
            Some("application/json")
        );
        assert_eq!(*message.properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(
            message
                .properties
                .message_id()
                .as_ref()
                .map(ShortString::as_str),
            Some("0b5c6a1e")
        );
        assert_eq!(message.body, br#"{"job_id":42}"#);
    }

    #[test]
    fn decode_reverses_encode() {
        let event = sample();
        let message = encode(&event).unwrap();
        let decoded = decode(&message.properties, message.body).unwrap();

        assert_eq!(decoded.id(), event.id());
        assert_eq!(decoded.source(), event.source());
        assert_eq!(decoded.ty(), event.ty());
        assert_eq!(decoded.subject(), event.subject());
        assert_eq!(decoded.time(), event.time());
        assert_eq!(decoded.datacontenttype(), Some("application/json"));
        assert_eq!(
            decoded.extension("traceparent").map(ToString::to_string),
            Some("00-abc-def-01".to_owned())
        );
        // Integer extensions come back as text, as in the HTTP binary mode.
        assert_eq!(
            decoded.extension("attempt").map(ToString::to_string),
            Some("3".to_owned())
        );
        let data: serde_json::Value = match decoded.data().unwrap() {
            cloudevents::Data::Binary(bytes) => serde_json::from_slice(bytes).unwrap(),
            cloudevents::Data::Json(value) => value.clone(),
            cloudevents::Data::String(text) => serde_json::from_str(text).unwrap(),
        };
        assert_eq!(data, serde_json::json!({ "job_id": 42 }));
    }

    #[test]
    fn decode_reads_event_without_data() {
        let event = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t.v1")
            .build()
            .unwrap();
        let message = encode(&event).unwrap();
        let decoded = decode(&message.properties, message.body).unwrap();
        assert_eq!(decoded.id(), "1");
        assert!(decoded.data().is_none());
        assert_eq!(decoded.datacontenttype(), None);
    }

    #[test]
    fn decode_reads_structured_mode() {
        let event = sample();
        let body = serde_json::to_vec(&event).unwrap();
        let properties =
            BasicProperties::default().with_content_type("application/cloudevents+json".into());
        let decoded = decode(&properties, body).unwrap();
        assert_eq!(decoded.id(), event.id());
        assert_eq!(decoded.ty(), event.ty());
    }

    #[test]
    fn decode_accepts_typed_headers() {
        let mut headers = FieldTable::default();
        headers.insert(
            "ce-specversion".into(),
            AMQPValue::ShortString("1.0".into()),
        );
        headers.insert("ce-id".into(), AMQPValue::LongString("7".into()));
        headers.insert("ce-source".into(), AMQPValue::LongString("/s".into()));
        headers.insert("ce-type".into(), AMQPValue::LongString("t.v1".into()));
        headers.insert("ce-sampled".into(), AMQPValue::Boolean(true));
        headers.insert("ce-count".into(), AMQPValue::LongInt(5));
        headers.insert("unrelated".into(), AMQPValue::LongString("x".into()));
        let properties = BasicProperties::default().with_headers(headers);

        let decoded = decode(&properties, Vec::new()).unwrap();
        assert_eq!(decoded.id(), "7");
        assert_eq!(
            decoded.extension("sampled").map(ToString::to_string),
            Some("true".to_owned())
        );
        assert_eq!(
            decoded.extension("count").map(ToString::to_string),
            Some("5".to_owned())
        );
        assert!(decoded.extension("unrelated").is_none());
    }

    #[test]
    fn decode_rejects_plain_messages() {
        let err = decode(&BasicProperties::default(), b"hello".to_vec()).unwrap_err();
        assert!(matches!(err, Error::InvalidEvent(_)), "{err}");
    }

    #[test]
    fn decode_rejects_missing_required_attribute() {
        let mut headers = FieldTable::default();
        headers.insert("ce-specversion".into(), AMQPValue::LongString("1.0".into()));
        headers.insert("ce-id".into(), AMQPValue::LongString("7".into()));
        let properties = BasicProperties::default().with_headers(headers);
        let err = decode(&properties, Vec::new()).unwrap_err();
        assert!(matches!(err, Error::InvalidEvent(_)), "{err}");
    }
}
