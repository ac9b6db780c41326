//! Managed restore: unwrapping the file key of one backup from its age header, with the org's
//! private key, in memory.
//!
//! An age file starts with a text header (age-encryption.org/v1): one stanza per recipient,
//! each wrapping the 16-byte file key, then a MAC line, `--- <base64 HMAC-SHA256>`, keyed by
//! `HKDF-SHA256(ikm = file key, salt = "", info = "header")` over the header up to and
//! including `---`. The agent sends just that header; this module finds the stanza addressed
//! to the org's X25519 key, unwraps the file key, and checks the MAC with it, so a key is
//! handed out only for a header that the file key really belongs to.

use age::Identity as _;
use age_core::format::{FileKey, Stanza};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The first line of every age v1 header.
const INTRO: &[u8] = b"age-encryption.org/v1\n";

/// What starts the MAC line; the MAC covers the header up to and including it.
const MAC_PREFIX: &[u8] = b"---";

/// Largest header accepted: room for hundreds of recipient stanzas.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most stanzas looked at in one header.
const MAX_STANZAS: usize = 256;

/// Why a header yields no file key. Names the part at fault, never any key material; the
/// message is a rule about the `header` field, and reads after its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not an age v1 header, or bytes follow its MAC line.
    #[error("is not an age-encryption.org/v1 header: {0}")]
    Malformed(&'static str),
    /// No X25519 stanza of the header is addressed to the org's key.
    #[error("has no stanza addressed to this org's recipient")]
    NotForThisOrg,
    /// A stanza unwrapped, but the header MAC does not verify under its file key.
    #[error("MAC does not verify")]
    Mac,
}

/// The SHA-256 of a header, lowercase hex: how a restore ticket names the backups it opens.
pub fn digest(header: &[u8]) -> String {
    hex::encode(Sha256::digest(header))
}

/// A parsed header: its stanzas, the bytes its MAC covers, and the MAC.
#[derive(Debug)]
struct Header<'a> {
    stanzas: Vec<Stanza>,
    mac_input: &'a [u8],
    mac: [u8; 32],
}

fn parse(header: &[u8]) -> Result<Header<'_>, HeaderError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::Malformed("larger than 64 KiB"));
    }
    let mut rest = header.strip_prefix(INTRO).ok_or(HeaderError::Malformed(
        "missing the age-encryption.org/v1 line",
    ))?;
    let mut stanzas = Vec::new();
    while !rest.starts_with(MAC_PREFIX) {
        if stanzas.len() == MAX_STANZAS {
            return Err(HeaderError::Malformed("more than 256 stanzas"));
        }
        let (after, stanza) = age_core::format::read::age_stanza(rest)
            .map_err(|_| HeaderError::Malformed("a stanza does not parse"))?;
        stanzas.push(Stanza::from(stanza));
        rest = after;
    }
    let mac_input = &header[..header.len() - rest.len() + MAC_PREFIX.len()];
    let encoded = rest[MAC_PREFIX.len()..]
        .strip_prefix(b" ")
        .and_then(|line| line.strip_suffix(b"\n"))
        .ok_or(HeaderError::Malformed(
            "the MAC line must be `--- <mac>` and end the header",
        ))?;
    let mac = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|mac| <[u8; 32]>::try_from(mac).ok())
        .ok_or(HeaderError::Malformed(
            "the MAC is not 32 bytes of unpadded base64",
        ))?;
    if stanzas.is_empty() {
        return Err(HeaderError::Malformed("no recipient stanza"));
    }
    Ok(Header {
        stanzas,
        mac_input,
        mac,
    })
}

/// Unwraps the file key of `header` with the org's private key `identity`
/// (`AGE-SECRET-KEY-1…`) and checks the header MAC with it. The key is zeroed when dropped.
pub fn unwrap(identity: &SecretString, header: &[u8]) -> Result<FileKey, HeaderError> {
    let parsed = parse(header)?;
    let identity: age::x25519::Identity = identity
        .expose_secret()
        .parse()
        .expect("the org key was checked when it was unwrapped");
    let file_key = identity
        .unwrap_stanzas(&parsed.stanzas)
        .ok_or(HeaderError::NotForThisOrg)?
        .map_err(|_| HeaderError::NotForThisOrg)?;
    let mut mac_key = age_core::primitives::hkdf(&[], b"header", file_key.expose_secret());
    let mut mac = Hmac::<Sha256>::new_from_slice(&mac_key).expect("HMAC takes a key of any length");
    zeroize::Zeroize::zeroize(&mut mac_key);
    mac.update(parsed.mac_input);
    mac.verify_slice(&parsed.mac)
        .map_err(|_| HeaderError::Mac)?;
    Ok(file_key)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// An age file for `recipient` whose payload is `plaintext`, made by the `age` crate.
    fn encrypt(recipient: &age::x25519::Recipient, plaintext: &[u8]) -> Vec<u8> {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(plaintext).unwrap();
        writer.finish().unwrap();
        out
    }

    /// The header of an age file: everything up to and including the MAC line.
    fn header_of(file: &[u8]) -> &[u8] {
        let at = file
            .windows(4)
            .position(|w| w == b"\n---")
            .expect("a MAC line");
        let end = at + 1 + file[at + 1..].iter().position(|&b| b == b'\n').unwrap() + 1;
        &file[..end]
    }

    fn refused(identity: &SecretString, header: &[u8]) -> HeaderError {
        match unwrap(identity, header) {
            Ok(_) => panic!("a file key came out of a header that should yield none"),
            Err(e) => e,
        }
    }

    fn key_pair() -> (SecretString, age::x25519::Recipient) {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        (identity.to_string(), recipient)
    }

    /// Opens a one-chunk age payload with `file_key`, by the age spec's STREAM construction:
    /// a 16-byte nonce, then ChaCha20-Poly1305 under HKDF(nonce, "payload", file key) with
    /// chunk nonce `0^11 || 0x01` (the first chunk is the last).
    fn open_payload(file_key: &FileKey, payload: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let (nonce, chunk) = payload.split_at(16);
        let key = age_core::primitives::hkdf(nonce, b"payload", file_key.expose_secret());
        let mut chunk_nonce = [0u8; 12];
        chunk_nonce[11] = 1;
        chacha20poly1305::ChaCha20Poly1305::new(&key.into())
            .decrypt(&chunk_nonce.into(), chunk)
            .expect("the payload opens with the unwrapped file key")
    }

    #[test]
    fn the_unwrapped_key_opens_the_backup_the_header_belongs_to() {
        let (identity, recipient) = key_pair();
        let file = encrypt(&recipient, b"a backup");
        let header = header_of(&file);
        let key = unwrap(&identity, header).unwrap();
        assert_eq!(open_payload(&key, &file[header.len()..]), b"a backup");
        // Another header for the same recipient has another key.
        let other = encrypt(&recipient, b"another backup");
        let other_key = unwrap(&identity, header_of(&other)).unwrap();
        assert_ne!(key.expose_secret(), other_key.expose_secret());
        assert_eq!(digest(header).len(), 64);
    }

    #[test]
    fn another_orgs_header_a_broken_mac_and_garbage_yield_no_key() {
        let (identity, _) = key_pair();
        let (_, stranger) = key_pair();
        let file = encrypt(&stranger, b"not yours");
        assert_eq!(
            refused(&identity, header_of(&file)),
            HeaderError::NotForThisOrg
        );

        let (identity, recipient) = key_pair();
        let file = encrypt(&recipient, b"mine");
        let mut header = header_of(&file).to_vec();
        // Flip one character of the ephemeral share's neighbour: the stanza body.
        let body = header.iter().position(|&b| b == b'\n').unwrap() + 1;
        let body = body + header[body..].iter().position(|&b| b == b'\n').unwrap() + 1;
        header[body] = if header[body] == b'A' { b'B' } else { b'A' };
        refused(&identity, &header);

        // A stanza slipped in after the fact: the file key still unwraps, the MAC refuses.
        let header = header_of(&file);
        let mac_line = header.windows(4).position(|w| w == b"\n---").unwrap() + 1;
        let mut grown = header[..mac_line].to_vec();
        grown.extend_from_slice(b"-> grease\n\n");
        grown.extend_from_slice(&header[mac_line..]);
        assert_eq!(refused(&identity, &grown), HeaderError::Mac);

        let with_payload = &file[..header_of(&file).len() + 1];
        assert!(matches!(
            refused(&identity, with_payload),
            HeaderError::Malformed(_)
        ));
        for garbage in [&b""[..], b"age-encryption.org/v1\n", b"hello\n--- x\n"] {
            assert!(matches!(
                refused(&identity, garbage),
                HeaderError::Malformed(_)
            ));
        }
        assert!(matches!(
            refused(&identity, &vec![b'a'; MAX_HEADER_BYTES + 1]),
            HeaderError::Malformed(_)
        ));
    }
}
