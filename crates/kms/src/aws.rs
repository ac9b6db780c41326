//! The AWS KMS provider.

use std::fmt;

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType};
use secrecy::{SecretBox, SecretSlice};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    AwsConfig, DATA_KEY_LEN, DataKey, EncryptionContext, Error, KeyId, Kms, WrappedKey,
    check_plaintext_len, secret_slice_from,
};

/// AWS KMS (or an API-compatible server through [`AwsConfig::endpoint`]).
///
/// Data keys come from `GenerateDataKey` (`AES_256`), unwrapping is `Decrypt` with the
/// recorded key id, rotation is `ReEncrypt` (the plaintext never leaves KMS), and caller key
/// material is wrapped with `Encrypt`. Every call sends the [`EncryptionContext`] as the KMS
/// encryption context, which KMS binds into the ciphertext and records in CloudTrail.
///
/// Retries use the SDK's standard mode: up to [`AwsConfig::max_attempts`] attempts with
/// exponential backoff and jitter, for transport errors, timeouts, 5xx answers and throttling
/// (`ThrottlingException` and friends are classified as retryable by the SDK). What still fails
/// after that is [`Error::Unavailable`].
///
/// The process needs `kms:DescribeKey` on the current key (checked at boot), plus
/// `kms:GenerateDataKey`, `kms:Encrypt`, `kms:Decrypt`, `kms:ReEncrypt*` as used.
///
/// Limitation: plaintext passed to [`Kms::encrypt`] and plaintext in `Decrypt` /
/// `GenerateDataKey` responses pass through SDK-owned buffers this crate cannot zeroize.
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    current: KeyId,
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// Builds the client and checks the current master key with `DescribeKey`: it must exist,
    /// be enabled, and be a symmetric encryption key. [`Kms::current_key_id`] is then the key's
    /// ARN, even when `config.key_id` is an alias, so every [`WrappedKey`] records the key that
    /// actually wrapped it.
    pub async fn connect(config: &AwsConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .operation_attempt_timeout(config.attempt_timeout)
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = loader.load().await;
        if sdk_config.region().is_none() {
            return Err(Error::Config(
                "no AWS region: set kms.region or AWS_REGION".to_owned(),
            ));
        }
        let client = aws_sdk_kms::Client::new(&sdk_config);

        let described = client
            .describe_key()
            .key_id(config.key_id.as_str())
            .send()
            .await
            .map_err(|e| map_sdk_error("describe key", &config.key_id, e))?;
        let metadata = described
            .key_metadata()
            .ok_or_else(|| Error::Protocol("DescribeKey returned no key metadata".to_owned()))?;
        let arn = metadata
            .arn()
            .ok_or_else(|| Error::Protocol("DescribeKey returned no key ARN".to_owned()))?;
        if !metadata.enabled() {
            return Err(Error::Config(format!(
                "kms master key {arn} is not enabled (state {:?})",
                metadata.key_state()
            )));
        }
        // A field the server leaves out is not held against the key (moto omits KeyUsage for
        // keys created with the default); the first real call would be refused anyway.
        let usage_ok = metadata
            .key_usage()
            .is_none_or(|usage| *usage == KeyUsageType::EncryptDecrypt);
        let spec_ok = metadata
            .key_spec()
            .is_none_or(|spec| *spec == KeySpec::SymmetricDefault);
        if !usage_ok || !spec_ok {
            return Err(Error::Config(format!(
                "kms master key {arn} is not a symmetric encryption key (usage {:?}, spec {:?})",
                metadata.key_usage(),
                metadata.key_spec()
            )));
        }
        tracing::debug!(key_id = %config.key_id, arn, "connected to aws kms");
        Ok(Self {
            client,
            current: KeyId::new(arn),
        })
    }
}

#[async_trait::async_trait]
impl Kms for AwsKms {
    fn current_key_id(&self) -> &KeyId {
        &self.current
    }

    #[tracing::instrument(level = "debug", skip_all, fields(org_id = %ctx.org_id(), purpose = %ctx.purpose()))]
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, Error> {
        let mut out = self
            .client
            .generate_data_key()
            .key_id(self.current.as_str())
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(ctx.to_aws_map()))
            .send()
            .await
            .map_err(|e| map_sdk_error("generate data key", &self.current, e))?;
        let plaintext = Zeroizing::new(
            out.plaintext
                .take()
                .ok_or_else(|| Error::Protocol("GenerateDataKey returned no plaintext".to_owned()))?
                .into_inner(),
        );
        if plaintext.len() != DATA_KEY_LEN {
            return Err(Error::Protocol(format!(
                "GenerateDataKey returned a {}-byte key, not {DATA_KEY_LEN}",
                plaintext.len()
            )));
        }
        let ciphertext = out
            .ciphertext_blob
            .take()
            .ok_or_else(|| Error::Protocol("GenerateDataKey returned no ciphertext".to_owned()))?
            .into_inner();
        let key_id = out.key_id.take().map(KeyId::new).ok_or_else(|| {
            Error::Protocol("GenerateDataKey did not say which key wrapped".to_owned())
        })?;
        Ok(DataKey {
            plaintext: SecretBox::init_with_mut(|key: &mut [u8; DATA_KEY_LEN]| {
                key.copy_from_slice(&plaintext)
            }),
            wrapped: WrappedKey { key_id, ciphertext },
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(org_id = %ctx.org_id(), purpose = %ctx.purpose()))]
    async fn encrypt(
        &self,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<WrappedKey, Error> {
        check_plaintext_len(plaintext.len())?;
        let mut out = self
            .client
            .encrypt()
            .key_id(self.current.as_str())
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(Some(ctx.to_aws_map()))
            .send()
            .await
            .map_err(|e| map_sdk_error("encrypt", &self.current, e))?;
        let ciphertext = out
            .ciphertext_blob
            .take()
            .ok_or_else(|| Error::Protocol("Encrypt returned no ciphertext".to_owned()))?
            .into_inner();
        let key_id =
            out.key_id.take().map(KeyId::new).ok_or_else(|| {
                Error::Protocol("Encrypt did not say which key wrapped".to_owned())
            })?;
        Ok(WrappedKey { key_id, ciphertext })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(org_id = %ctx.org_id(), purpose = %ctx.purpose(), key_id = %wrapped.key_id))]
    async fn decrypt_bytes(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretSlice<u8>, Error> {
        let mut out = self
            .client
            .decrypt()
            // Name the key: KMS then refuses a ciphertext made under any other key.
            .key_id(wrapped.key_id.as_str())
            .ciphertext_blob(Blob::new(wrapped.ciphertext.as_slice()))
            .set_encryption_context(Some(ctx.to_aws_map()))
            .send()
            .await
            .map_err(|e| map_sdk_error("decrypt", &wrapped.key_id, e))?;
        let mut plaintext = out
            .plaintext
            .take()
            .ok_or_else(|| Error::Protocol("Decrypt returned no plaintext".to_owned()))?
            .into_inner();
        let secret = secret_slice_from(&plaintext);
        plaintext.zeroize();
        Ok(secret)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(org_id = %ctx.org_id(), purpose = %ctx.purpose(), source = %wrapped.key_id, destination = %destination))]
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
        destination: &KeyId,
    ) -> Result<WrappedKey, Error> {
        let context = ctx.to_aws_map();
        let mut out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.ciphertext.as_slice()))
            .source_key_id(wrapped.key_id.as_str())
            .set_source_encryption_context(Some(context.clone()))
            .destination_key_id(destination.as_str())
            .set_destination_encryption_context(Some(context))
            .send()
            .await
            .map_err(|e| {
                // NotFound can be either key; KMS names the missing one in its message.
                let missing = match e.message() {
                    Some(message) if message.contains(destination.as_str()) => destination,
                    _ => &wrapped.key_id,
                };
                map_sdk_error("re-encrypt", missing, e)
            })?;
        let ciphertext = out
            .ciphertext_blob
            .take()
            .ok_or_else(|| Error::Protocol("ReEncrypt returned no ciphertext".to_owned()))?
            .into_inner();
        let key_id =
            out.key_id.take().map(KeyId::new).ok_or_else(|| {
                Error::Protocol("ReEncrypt did not say which key wrapped".to_owned())
            })?;
        Ok(WrappedKey { key_id, ciphertext })
    }
}

/// Maps an SDK error onto [`Error`] without its raw debug output: a response body can hold
/// plaintext (a `Decrypt` answer), so only the service's error code and message, or the
/// `Display` chain of a transport error (which never contains a body), are kept.
fn map_sdk_error<E>(op: &str, key_id: &KeyId, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ConstructionFailure(_) => Error::Config(format!(
            "{op}: could not build the request: {}",
            source_chain(&err)
        )),
        SdkError::TimeoutError(_) => Error::Unavailable(format!("{op}: timed out")),
        SdkError::DispatchFailure(_) => {
            Error::Unavailable(format!("{op}: could not reach kms: {}", source_chain(&err)))
        }
        // Deliberately no source chain: a parse error may quote the body.
        SdkError::ResponseError(_) => {
            Error::Unavailable(format!("{op}: kms sent a response that could not be read"))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown error");
            let status = service.raw().status().as_u16();
            let what = match service.err().message() {
                Some(message) if !message.is_empty() => format!("{op}: {code}: {message}"),
                _ => format!("{op}: {code}"),
            };
            match code {
                "NotFoundException" => Error::KeyNotFound(key_id.clone()),
                "InvalidCiphertextException"
                | "IncorrectKeyException"
                | "AccessDeniedException"
                | "InvalidGrantTokenException"
                | "DisabledException"
                | "KMSInvalidStateException"
                | "InvalidKeyUsageException" => Error::Denied(what),
                "ThrottlingException"
                | "LimitExceededException"
                | "DependencyTimeoutException"
                | "KMSInternalException"
                | "KeyUnavailableException"
                | "ServiceUnavailableException"
                | "InternalFailure"
                | "RequestTimeoutException" => Error::Unavailable(what),
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "ValidationException"
                | "InvalidArnException"
                | "InvalidAliasNameException" => Error::Config(what),
                _ if status == 429 || status >= 500 => Error::Unavailable(what),
                _ => Error::Denied(what),
            }
        }
        _ => Error::Unavailable(format!("{op}: {}", source_chain(&err))),
    }
}

/// `err`'s causes joined with `: `, using `Display` only. (`DisplayErrorContext` would append
/// the error's `Debug` form, which this crate never prints.)
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = err.source();
    while let Some(cause) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    if out.is_empty() { err.to_string() } else { out }
}
