//! The org's certificate revocation list, as the agent checks it: signed by the org's
//! intermediate CA (the one that issued the agent's certificate), and either lists the agent's
//! serial or does not.

use chrono::{DateTime, Utc};
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// Why a CRL cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a DER CRL, or the intermediate is not a PEM certificate.
    #[error("{0} does not parse")]
    Malformed(&'static str),
    /// Issued by another CA than the org's intermediate.
    #[error("the CRL was not issued by the org's intermediate CA")]
    WrongIssuer,
    /// The signature does not verify under the intermediate's key.
    #[error("the CRL's signature does not verify under the org's intermediate CA key")]
    BadSignature,
}

/// What a verified CRL says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The serial is on the list.
    pub revoked: bool,
    /// When the list was issued.
    pub this_update: DateTime<Utc>,
    /// When the next list is due; the list is stale after it.
    pub next_update: Option<DateTime<Utc>>,
}

/// A serial as unsigned big-endian bytes without leading zeros (DER integers may carry a zero
/// byte in front of a high bit; hex serials may carry leading zeros).
fn magnitude(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Verifies `crl_der` against `intermediate_pem` and looks `serial_hex` up in it.
pub fn check(crl_der: &[u8], intermediate_pem: &str, serial_hex: &str) -> Result<Verdict, Error> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(intermediate_pem.as_bytes())
        .map_err(|_| Error::Malformed("the intermediate certificate"))?;
    let (_, issuer) = X509Certificate::from_der(&pem.contents)
        .map_err(|_| Error::Malformed("the intermediate certificate"))?;
    let (rest, crl) =
        CertificateRevocationList::from_der(crl_der).map_err(|_| Error::Malformed("the CRL"))?;
    if !rest.is_empty() {
        return Err(Error::Malformed("the CRL"));
    }
    if crl.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(Error::WrongIssuer);
    }
    crl.verify_signature(issuer.public_key())
        .map_err(|_| Error::BadSignature)?;
    let serial = hex::decode(serial_hex).map_err(|_| Error::Malformed("the agent's serial"))?;
    let revoked = crl
        .iter_revoked_certificates()
        .any(|entry| magnitude(entry.raw_serial()) == magnitude(&serial));
    let time = |t: x509_parser::time::ASN1Time| DateTime::from_timestamp(t.timestamp(), 0);
    Ok(Verdict {
        revoked,
        this_update: time(crl.last_update()).unwrap_or(DateTime::<Utc>::MIN_UTC),
        next_update: crl.next_update().and_then(time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_without_leading_zeros() {
        assert_eq!(magnitude(&[0, 0, 0x81, 2]), &[0x81, 2]);
        assert_eq!(magnitude(&[0x7f]), &[0x7f]);
        assert_eq!(magnitude(&[0]), &[] as &[u8]);
    }

    #[test]
    fn garbage_is_malformed_not_trusted() {
        assert_eq!(
            check(b"junk", "junk", "01"),
            Err(Error::Malformed("the intermediate certificate"))
        );
    }
}
