//! Small conversions between SDK types and repave's.

use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use repave_core::provider::Tags;
use repave_core::Timestamp;

pub(crate) fn ts(d: Option<&DateTime>) -> Timestamp {
    Timestamp(d.and_then(|d| d.to_millis().ok()).unwrap_or(0))
}

/// EC2 reports image creation dates as ISO-8601 strings.
pub(crate) fn ts_str(s: Option<&str>) -> Timestamp {
    Timestamp(
        s.and_then(|s| DateTime::from_str(s, Format::DateTime).ok())
            .and_then(|d| d.to_millis().ok())
            .unwrap_or(0),
    )
}

pub(crate) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp(ms)
}

pub(crate) fn ec2_tags(t: &Tags) -> Vec<aws_sdk_ec2::types::Tag> {
    t.iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

pub(crate) fn from_ec2_tags(t: &[aws_sdk_ec2::types::Tag]) -> Tags {
    t.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect()
}

/// `tag:KEY = VALUE` filters, one per tag (EC2 ANDs them).
pub(crate) fn tag_filters(t: &Tags) -> Vec<aws_sdk_ec2::types::Filter> {
    t.iter()
        .map(|(k, v)| {
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{k}"))
                .values(v)
                .build()
        })
        .collect()
}

pub(crate) fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> aws_sdk_ec2::types::Filter {
    let mut f = aws_sdk_ec2::types::Filter::builder().name(name);
    for v in values {
        f = f.values(v);
    }
    f.build()
}

pub(crate) fn tag_spec(kind: aws_sdk_ec2::types::ResourceType, t: &Tags) -> aws_sdk_ec2::types::TagSpecification {
    aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(ec2_tags(t)))
        .build()
}
