//! Signed notes (c2sp.org/signed-note) with Ed25519 keys, and the checkpoint body a log
//! signs (c2sp.org/tlog-checkpoint). Compatible with `golang.org/x/mod/sumdb/note`.
//!
//! A signed note is a text ending in a newline, a blank line, then signature lines
//! `— <key name> base64(key hash || signature)`. The key hash names the key; the signature
//! covers the text including its final newline.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::Hash;

/// The largest signed note or checkpoint body accepted or produced, in bytes.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

/// The most signature lines a note may carry (the spec asks verifiers to accept 16).
pub const MAX_SIGNATURES: usize = 100;

/// Signature type byte of Ed25519 in key hashes and verifier keys.
const ED25519: u8 = 0x01;

/// Em dash and space: how every signature line starts.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a note, checkpoint or key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Key names are non-empty, without whitespace, control characters or '+'.
    #[error("key name {0:?} is empty or contains whitespace, control characters or '+'")]
    InvalidName(String),
    /// The note or body exceeds [`MAX_NOTE_SIZE`].
    #[error("note is {0} bytes, more than the limit of {max}", max = MAX_NOTE_SIZE)]
    TooLarge(usize),
    /// Notes contain no control characters other than newline.
    #[error("note has a control character at byte {0}")]
    ControlCharacter(usize),
    /// Note texts, signature blocks and checkpoint bodies end with a newline.
    #[error("note does not end with a newline")]
    MissingFinalNewline,
    /// A signed note has no blank line between text and signatures.
    #[error("note has no blank line before its signatures")]
    MissingSignatures,
    /// A signature line (counted from 1) is not `— <name> <base64>`.
    #[error("signature line {line} {problem}")]
    MalformedSignature {
        /// The line's number within the signature block, from 1.
        line: usize,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {max} signatures", max = MAX_SIGNATURES)]
    TooManySignatures,
    /// A verifier key is not `<name>+<8 hex digits>+<base64(0x01 || public key)>`.
    #[error("verifier key {0}")]
    MalformedVerifierKey(&'static str),
    /// A verifier key's hash is not the hash of its name and key.
    #[error("verifier key hash {stated} does not match {computed}, the hash of its name and key")]
    KeyHashMismatch {
        /// The hash written in the verifier key.
        stated: String,
        /// The hash computed from its name and public key.
        computed: String,
    },
    /// No signature line carries this verifier's name and key hash.
    #[error("no signature by {name}+{key_hash}")]
    NoSignature {
        /// The verifier's key name.
        name: String,
        /// The verifier's key hash, in hex.
        key_hash: String,
    },
    /// A signature line by this verifier does not verify over the note text.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    /// A checkpoint line (numbered from 1) is missing or malformed.
    #[error("checkpoint line {line} {problem}")]
    InvalidCheckpoint {
        /// The line's number in the body, from 1.
        line: usize,
        /// Which line it is and what is wrong with it.
        problem: &'static str,
    },
}

/// A checkpoint body: origin, tree size and root hash, then optional extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `coffer.example/audit/<org id>`; one non-empty line.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The RFC 9162 root of the first `size` leaves.
    pub root: Hash,
    /// Opaque, non-empty extension lines, without their newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: `"<origin>\n<size>\n<base64 root>\n"`, then each extension line and a
    /// newline. Fields are not validated here: a one-line non-empty origin and non-empty
    /// single-line extensions give a body that [`Checkpoint::parse`] reads back unchanged.
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint body, such as the text [`Verifier::verify`] returns.
    pub fn parse(body: &str) -> Result<Self, NoteError> {
        check_text(body)?;
        let body = body
            .strip_suffix('\n')
            .ok_or(NoteError::MissingFinalNewline)?;
        let lines: Vec<&str> = body.split('\n').collect();
        let invalid = |line, problem| NoteError::InvalidCheckpoint { line, problem };
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(match lines.len() {
                1 => invalid(2, "(size) is missing"),
                _ => invalid(3, "(root hash) is missing"),
            });
        };
        if origin.is_empty() {
            return Err(invalid(1, "(origin) is empty"));
        }
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(2, "(size) is not a decimal number"));
        }
        if size.len() > 1 && size.starts_with('0') {
            return Err(invalid(2, "(size) has a leading zero"));
        }
        let size = size
            .parse()
            .map_err(|_| invalid(2, "(size) does not fit in 64 bits"))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|bytes| Hash::try_from(bytes).ok())
            .ok_or(invalid(3, "(root hash) is not the base64 of 32 bytes"))?;
        if let Some(empty) = extensions.iter().position(|line| line.is_empty()) {
            return Err(invalid(empty + 4, "(extension) is empty"));
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
            extensions: extensions.iter().map(|line| line.to_string()).collect(),
        })
    }
}

/// The recommended key hash of an Ed25519 key: the first 4 bytes of
/// SHA-256(name || "\n" || 0x01 || public key).
pub fn key_hash(name: &str, public_key: &VerifyingKey) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ED25519])
        .chain_update(public_key.as_bytes())
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Signs notes with a named Ed25519 key. `Debug` shows the name and key hash, never the key.
pub struct Signer {
    key: SigningKey,
    verifier: Verifier,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.verifier.name)
            .field("key_hash", &hex::encode(self.verifier.key_hash))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `key` under the key name `name`.
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, NoteError> {
        let verifier = Verifier::new(name, key.verifying_key())?;
        Ok(Self { key, verifier })
    }

    /// The key name signatures carry.
    pub fn name(&self) -> &str {
        &self.verifier.name
    }

    /// The verifier for this signer's signatures.
    pub fn verifier(&self) -> Verifier {
        self.verifier.clone()
    }

    /// Signs `body` (text ending in a newline) and returns the complete signed note:
    /// `body`, a blank line and one signature line.
    pub fn sign(&self, body: &str) -> Result<String, NoteError> {
        check_text(body)?;
        if !body.ends_with('\n') {
            return Err(NoteError::MissingFinalNewline);
        }
        let mut signature = self.verifier.key_hash.to_vec();
        signature.extend(self.key.sign(body.as_bytes()).to_bytes());
        let note = format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.verifier.name,
            BASE64.encode(signature)
        );
        if note.len() > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge(note.len()));
        }
        Ok(note)
    }
}

/// Verifies notes signed by one named Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_hash: [u8; 4],
    public_key: VerifyingKey,
}

impl Verifier {
    /// A verifier for `public_key` under the key name `name`.
    pub fn new(name: impl Into<String>, public_key: VerifyingKey) -> Result<Self, NoteError> {
        let name = name.into();
        if !is_valid_name(&name) {
            return Err(NoteError::InvalidName(name));
        }
        Ok(Self {
            key_hash: key_hash(&name, &public_key),
            name,
            public_key,
        })
    }

    /// Parses a verifier key `<name>+<8 hex digit key hash>+<base64(0x01 || public key)>`
    /// and checks the key hash matches the name and key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(stated), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::MalformedVerifierKey(
                "is not <name>+<key hash>+<key>",
            ));
        };
        if stated.len() != 8 || hex::decode(stated).is_err() {
            return Err(NoteError::MalformedVerifierKey("hash is not 8 hex digits"));
        }
        let key = BASE64
            .decode(key)
            .map_err(|_| NoteError::MalformedVerifierKey("key is not base64"))?;
        let public_key = match key.split_first() {
            Some((&ED25519, bytes)) => <[u8; 32]>::try_from(bytes)
                .ok()
                .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
                .ok_or(NoteError::MalformedVerifierKey(
                    "key is not a 32-byte Ed25519 public key",
                ))?,
            _ => {
                return Err(NoteError::MalformedVerifierKey(
                    "key is not of type 0x01 (Ed25519)",
                ));
            }
        };
        let verifier = Self::new(name, public_key)?;
        let computed = hex::encode(verifier.key_hash);
        if !stated.eq_ignore_ascii_case(&computed) {
            return Err(NoteError::KeyHashMismatch {
                stated: stated.to_string(),
                computed,
            });
        }
        Ok(verifier)
    }

    /// The verifier key text that [`Verifier::parse`] reads, with a lowercase key hash.
    pub fn to_vkey(&self) -> String {
        let mut key = vec![ED25519];
        key.extend(self.public_key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_hash),
            BASE64.encode(key)
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key hash (see [`key_hash`]).
    pub fn key_hash(&self) -> [u8; 4] {
        self.key_hash
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }

    /// Verifies a signed note: splits it at the last blank line and requires at least one
    /// signature line by this verifier (name and key hash match); every such line must hold
    /// a valid Ed25519 signature over the text including its final newline (checked with
    /// `verify_strict`). Signatures by other keys are ignored. Returns the text.
    pub fn verify<'a>(&self, signed_note: &'a str) -> Result<&'a str, NoteError> {
        check_text(signed_note)?;
        let split = signed_note
            .rfind("\n\n")
            .ok_or(NoteError::MissingSignatures)?;
        let (text, signatures) = (&signed_note[..=split], &signed_note[split + 2..]);
        if signatures.is_empty() {
            return Err(NoteError::MissingSignatures);
        }
        let signatures = signatures
            .strip_suffix('\n')
            .ok_or(NoteError::MissingFinalNewline)?;

        let mut signed = false;
        for (number, line) in signatures.split('\n').enumerate() {
            let line_number = number + 1;
            if line_number > MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let (name, key_hash, signature) =
                parse_signature_line(line).map_err(|problem| NoteError::MalformedSignature {
                    line: line_number,
                    problem,
                })?;
            if name != self.name || key_hash != self.key_hash {
                continue;
            }
            let valid = Signature::from_slice(&signature)
                .and_then(|signature| self.public_key.verify_strict(text.as_bytes(), &signature));
            if valid.is_err() {
                return Err(NoteError::BadSignature(self.name.clone()));
            }
            signed = true;
        }
        if !signed {
            return Err(NoteError::NoSignature {
                name: self.name.clone(),
                key_hash: hex::encode(self.key_hash),
            });
        }
        Ok(text)
    }
}

/// Splits `— <name> <base64(key hash || signature)>` into name, key hash and signature.
fn parse_signature_line(line: &str) -> Result<(&str, [u8; 4], Vec<u8>), &'static str> {
    let line = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or("does not start with an em dash and a space")?;
    let (name, encoded) = line
        .split_once(' ')
        .ok_or("has no space between key name and signature")?;
    if !is_valid_name(name) {
        return Err("has an invalid key name");
    }
    let mut signature = BASE64.decode(encoded).map_err(|_| "is not base64")?;
    if signature.len() < 5 {
        return Err("is too short for a key hash and a signature");
    }
    let rest = signature.split_off(4);
    let key_hash = [signature[0], signature[1], signature[2], signature[3]];
    Ok((name, key_hash, rest))
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// Notes are bounded in size and hold no control characters but newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_SIZE {
        return Err(NoteError::TooLarge(text.len()));
    }
    match text.find(|c: char| c < ' ' && c != '\n') {
        Some(offset) => Err(NoteError::ControlCharacter(offset)),
        None => Ok(()),
    }
}
