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
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls;
use bytes::Bytes;
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;

use crate::guard::Guard;
use crate::{Error, PART_SIZE, Refused, S3Key};

/// S3 numbers parts 1 to 10,000; an upload cannot have more.
const MAX_PARTS: i32 = 10_000;

/// How long one attempt at sending a part may take. The client-wide attempt timeout (30 s) is
/// sized for small requests; a full part at that limit would need about 2.2 Mbit/s of upload
/// bandwidth, more than some agents' uplinks have.
const PART_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

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

    #[cfg(feature = "delete")]
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

    /// Starts a multipart upload at `key`.
    pub(crate) async fn upload(&self, key: &str) -> Result<Upload, Error> {
        let key = self.full(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| during("start the upload", describe(e)))?;
        let upload_id = created.upload_id().ok_or_else(|| {
            Error::Failed("start the upload: the destination returned no upload id".into())
        })?;
        Ok(Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key,
            upload_id: upload_id.to_owned(),
            buffer: Vec::new(),
            next_part: 1,
            sent: Vec::new(),
            in_flight: None,
        })
    }

    /// Opens the object at `key` for streaming; returns its body and, when the destination says,
    /// its size.
    pub(crate) async fn download(
        &self,
        key: &str,
    ) -> Result<(impl tokio::io::AsyncRead + Send + Sync + use<>, Option<u64>), Error> {
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
        let size = object.content_length().and_then(|n| u64::try_from(n).ok());
        Ok((object.body.into_async_read(), size))
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

/// Prefixes a failure with the operation it happened in; a refusal stays as the guard worded it.
fn during(what: &str, e: Error) -> Error {
    match e {
        Error::Failed(cause) => Error::Failed(format!("{what}: {cause}")),
        other => other,
    }
}

/// A multipart upload in progress. Parts are [`PART_SIZE`] bytes (the last may be shorter): one
/// is filled in `buffer` while at most one other is sent by a task, so memory stays near two
/// parts whatever the object's size.
pub(crate) struct Upload {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// The full key, prefix included.
    key: String,
    upload_id: String,
    /// The part being filled; empty (and unallocated) right after a part was handed off.
    buffer: Vec<u8>,
    next_part: i32,
    /// The parts the destination has acknowledged, in order, for CompleteMultipartUpload.
    sent: Vec<CompletedPart>,
    /// The part being sent, if any.
    in_flight: Option<PartTask>,
}

/// The task sending one part. Dropping it (an [`Upload`] dropped without finish or abort) stops
/// the send, so no part is uploaded after its upload was given up.
struct PartTask {
    number: i32,
    task: JoinHandle<Result<CompletedPart, Error>>,
}

impl Drop for PartTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PartTask {
    async fn outcome(mut self) -> Result<CompletedPart, Error> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(Error::Failed(format!(
                "upload part {}: the sending task ended: {e}",
                self.number
            ))),
        }
    }
}

impl Upload {
    pub(crate) async fn write(&mut self, mut chunk: Bytes) -> Result<(), Error> {
        while !chunk.is_empty() {
            if self.buffer.capacity() == 0 {
                // Exactly one part, so the buffer never grows past it.
                self.buffer.reserve_exact(PART_SIZE);
            }
            let room = PART_SIZE - self.buffer.len();
            let piece = chunk.split_to(room.min(chunk.len()));
            self.buffer.extend_from_slice(&piece);
            if self.buffer.len() == PART_SIZE {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// Hands the buffer off as the next part, after the part before it has been acknowledged.
    async fn send_part(&mut self) -> Result<(), Error> {
        // Waiting here is what bounds memory: a producer faster than the destination is held
        // back once one part is buffered and one is in flight.
        if let Some(previous) = self.in_flight.take() {
            self.sent.push(previous.outcome().await?);
        }
        let number = self.next_part;
        if number > MAX_PARTS {
            return Err(Error::Failed(format!(
                "the object is larger than S3 allows for one upload ({MAX_PARTS} parts of {} MiB)",
                PART_SIZE / (1024 * 1024)
            )));
        }
        self.next_part += 1;
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .customize()
            .config_override(
                aws_sdk_s3::Config::builder().timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .operation_attempt_timeout(PART_ATTEMPT_TIMEOUT)
                        .build(),
                ),
            );
        let task = tokio::spawn(async move {
            let what = format!("upload part {number}");
            let sent = request
                .send()
                .await
                .map_err(|e| during(&what, describe(e)))?;
            let e_tag = sent.e_tag().ok_or_else(|| {
                Error::Failed(format!("{what}: the destination returned no ETag"))
            })?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .e_tag(e_tag)
                .build())
        });
        self.in_flight = Some(PartTask { number, task });
        Ok(())
    }

    /// Sends what is buffered as the last part and completes the upload. On failure the upload
    /// is aborted, since the caller, having given up the handle, no longer can.
    pub(crate) async fn finish(mut self) -> Result<(), Error> {
        let result = self.complete().await;
        if result.is_err() {
            // Best effort: the error that matters is the one that stopped the upload.
            let _ = self.abort().await;
        }
        result
    }

    async fn complete(&mut self) -> Result<(), Error> {
        // An empty object is one empty part: CompleteMultipartUpload needs at least one.
        if !self.buffer.is_empty() || self.next_part == 1 {
            self.send_part().await?;
        }
        if let Some(last) = self.in_flight.take() {
            self.sent.push(last.outcome().await?);
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.sent)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| during("complete the upload", describe(e)))?;
        Ok(())
    }

    /// Aborts the upload: the destination discards the parts it holds.
    pub(crate) async fn abort(&mut self) -> Result<(), Error> {
        // A part still being sent could be stored after the abort and kept (S3 documents this
        // race), so let it end first, however it ends.
        if let Some(part) = self.in_flight.take() {
            let _ = part.outcome().await;
        }
        self.buffer = Vec::new();
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| during("abort the upload", describe(e)))?;
        Ok(())
    }
}
