//! ApiVersions: the APIs and versions we implement and test. A request at a version we do not
//! know gets Kafka's fallback: a v0 response with UNSUPPORTED_VERSION and the list, so the client
//! retries at a version both sides support.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::ResponseError;

use super::{versions, SUPPORTED};

fn keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .filter_map(|(k, _, _)| {
            versions(*k).map(|(lo, hi)| ApiVersion::default().with_api_key(*k as i16).with_min_version(lo).with_max_version(hi))
        })
        .collect()
}

pub fn handle(_version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(keys())
}

pub fn fallback() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(ResponseError::UnsupportedVersion.code()).with_api_keys(keys())
}
