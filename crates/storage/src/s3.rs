//! S3-compatible buckets through aws-sdk-s3, over an HTTP client whose DNS resolver is the
//! SSRF guard's.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls;
use bytes::Bytes;
use secrecy::ExposeSecret;

use crate::guard::Guard;
use crate::{Error, Refused, S3Key};

pub(crate) struct S3Store {
    client: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
}

/// The first [`Refused`] in an error's source chain: a connection the guard refused.
fn refused_in(e: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        next = e.source();
    }
    None
}

/// An error and its sources, `a: b: c`, each message once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// What went wrong, in words that carry no secret: the service's error code and message and the
/// HTTP status, or why the request never got an answer.
fn describe<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(refused) = refused_in(&e) {
        return Error::Refused(refused);
    }
    match &e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let err = service.err();
            let code = err.code().unwrap_or("error");
            match err.message() {
                Some(message) if !message.is_empty() => {
                    Error::Failed(format!("{code} (HTTP {status}): {message}"))
                }
                _ => Error::Failed(format!("{code} (HTTP {status})")),
            }
        }
        SdkError::TimeoutError(_) => Error::Failed("the destination did not answer in time".into()),
        _ => Error::Failed(chain(&e)),
    }
}

impl S3Store {
    pub(crate) fn new(
        endpoint: &url::Url,
        region: &str,
        bucket: &str,
        prefix: &str,
        path_style: bool,
        key: S3Key,
        guard: &Guard,
    ) -> Self {
        // Every name the connector looks up (the endpoint's host, or `bucket.host` in
        // virtual-hosted style) goes through the guard, on every new connection. No proxy is
        // configured, so nothing resolves names on our behalf.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_with_resolver(guard.resolver());
        let credentials = Credentials::new(
            key.access_key_id.clone(),
            key.secret_access_key.expose_secret().to_owned(),
            None,
            None,
            "coffer-storage-credential",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(endpoint.as_str().trim_end_matches('/'))
            .force_path_style(path_style)
            .credentials_provider(credentials)
            .http_client(http)
            // Checksums only where the API requires them: many S3-compatible servers refuse the
            // newer default trailing checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(describe)?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    keys.push(key.to_owned());
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub(crate) async fn put(&self, key: &str, bytes: Bytes) -> Result<(), Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(describe)?;
        Ok(())
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Bytes, Error> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_no_such_key() => Error::NotFound,
                _ => describe(e),
            })?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| Error::Failed(format!("reading the object: {}", chain(&e))))?;
        Ok(body.into_bytes())
    }

    #[cfg(feature = "delete")]
    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(describe)?;
        Ok(())
    }
}
