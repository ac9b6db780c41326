//! Signed notes and checkpoints against published examples, and a sign/verify round trip.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use coffer_tlog::note::{Checkpoint, NoteError, Signer, Verifier, key_hash};
use coffer_tlog::{Frontier, leaf_hash};
use ed25519_dalek::SigningKey;

// The example key pair and notes of golang.org/x/mod/sumdb/note (package docs and
// note_test.go: TestNewVerifier, TestSign, TestOpen). The private key is "PRIVATE+KEY+" and
// the verifier key with base64(0x01 || 32-byte seed) as its key.
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SEED: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

// A checkpoint signed by the Go checksum database: its verifier key is the default GOSUMDB
// key built into the go command (cmd/go/internal/modfetch/key.go); the note is a
// sum.golang.org /lookup response quoted in github.com/sigsum/sigsum,
// proposals/2026-01-22-tags-releases-non-releases.md.
const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
const SUMDB_NOTE: &str = "go.sum database tree\n49189689\nftjbAOzaupaIvaPo/G+Dk63nxOZ2s1OPOKIaPtXs7S4=\n\n\
                          — sum.golang.org Az3grlKZssqRoMNPpZfKt0TphbbcF+pzXqElURJKRNFKfaUAgqeI5k2AORH0QAhg/ebRwyIqD/OqP4oLtLnNumvOBAM=\n";

fn peter_signer() -> Signer {
    let seed = BASE64.decode(PETER_SEED).unwrap();
    assert_eq!(seed[0], 0x01);
    Signer::new(
        "PeterNeumann",
        SigningKey::from_bytes(&seed[1..].try_into().unwrap()),
    )
    .unwrap()
}

#[test]
fn go_example_note_verifies() {
    let peter = Verifier::parse(PETER_VKEY).unwrap();
    assert_eq!(peter.name(), "PeterNeumann");
    assert_eq!(peter.key_hash(), [0xc7, 0x4f, 0x20, 0xa3]);
    assert_eq!(peter.to_vkey(), PETER_VKEY);
    assert_eq!(peter.verify(&format!("{TEXT}\n{PETER_SIG}")), Ok(TEXT));

    // Signatures by other keys are ignored, whichever key is ours.
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(peter.verify(&both), Ok(TEXT));
    assert_eq!(Verifier::parse(ENOCH_VKEY).unwrap().verify(&both), Ok(TEXT));

    // Ed25519 is deterministic: the published private key reproduces the published note.
    let signer = peter_signer();
    assert_eq!(signer.verifier(), peter);
    assert_eq!(signer.sign(TEXT).unwrap(), format!("{TEXT}\n{PETER_SIG}"));
}

#[test]
fn go_example_note_refuses_changes() {
    let peter = Verifier::parse(PETER_VKEY).unwrap();
    let changed_text = format!(
        "{}\n{PETER_SIG}",
        TEXT.replace("cryptography", "blockchain")
    );
    let err = peter.verify(&changed_text).unwrap_err();
    assert_eq!(err.to_string(), "signature by PeterNeumann does not verify");

    let changed_sig = format!("{TEXT}\n{}", PETER_SIG.replace("x08go/ZJ", "x08go/ZK"));
    assert_eq!(
        peter.verify(&changed_sig),
        Err(NoteError::BadSignature("PeterNeumann".into()))
    );

    let err = peter.verify(&format!("{TEXT}\n{ENOCH_SIG}")).unwrap_err();
    assert_eq!(err.to_string(), "no signature by PeterNeumann+c74f20a3");

    // Any truncation or single-byte change of the verifier key is refused (as Go's test).
    let bytes = PETER_VKEY.as_bytes();
    for i in 0..bytes.len() {
        for j in i + 1..=bytes.len() {
            if (i, j) != (0, bytes.len()) {
                assert!(
                    Verifier::parse(&PETER_VKEY[i..j]).is_err(),
                    "{}",
                    &PETER_VKEY[i..j]
                );
            }
        }
        let mut changed = bytes.to_vec();
        changed[i] += 1;
        assert!(Verifier::parse(std::str::from_utf8(&changed).unwrap()).is_err());
    }
}

#[test]
fn sumdb_checkpoint_verifies_and_parses() {
    let sumdb = Verifier::parse(SUMDB_VKEY).unwrap();
    let body = sumdb.verify(SUMDB_NOTE).unwrap();
    let checkpoint = Checkpoint::parse(body).unwrap();
    assert_eq!(checkpoint.origin, "go.sum database tree");
    assert_eq!(checkpoint.size, 49189689);
    assert_eq!(
        BASE64.encode(checkpoint.root),
        "ftjbAOzaupaIvaPo/G+Dk63nxOZ2s1OPOKIaPtXs7S4="
    );
    assert!(checkpoint.extensions.is_empty());
    assert_eq!(checkpoint.to_body(), body);
    assert!(
        sumdb
            .verify(&SUMDB_NOTE.replace("49189689", "49189690"))
            .is_err()
    );
}

#[test]
fn signed_checkpoint_round_trips() {
    let name = "coffer.example/audit/0190f3c4-7a2b-7c3d-8e4f-5a6b7c8d9e0f";
    let signer = Signer::new(name, SigningKey::from_bytes(&[7; 32])).unwrap();
    let mut frontier = Frontier::new();
    for entry in [b"enrolled".as_slice(), b"rotated", b"released"] {
        frontier.push(leaf_hash(entry));
    }
    let checkpoint = Checkpoint {
        origin: name.into(),
        size: frontier.size(),
        root: frontier.root(),
        extensions: vec!["chain 3 abc=".into()],
    };
    let body = checkpoint.to_body();
    let note = signer.sign(&body).unwrap();

    let verifier = Verifier::parse(&signer.verifier().to_vkey()).unwrap();
    assert_eq!(verifier, signer.verifier());
    assert_eq!(verifier.key_hash(), key_hash(name, verifier.public_key()));
    assert_eq!(
        Checkpoint::parse(verifier.verify(&note).unwrap()),
        Ok(checkpoint)
    );

    let other = Signer::new(name, SigningKey::from_bytes(&[8; 32])).unwrap();
    assert!(matches!(
        other.verifier().verify(&note),
        Err(NoteError::NoSignature { .. })
    ));
    let tampered_body = note.replacen("\n3\n", "\n4\n", 1);
    assert_eq!(
        verifier.verify(&tampered_body),
        Err(NoteError::BadSignature(name.into()))
    );
    let (text, signature) = note.split_at(note.len() - 10);
    let tampered_signature = format!(
        "{text}{}",
        signature.replacen('A', "B", 1).replacen('Q', "R", 1)
    );
    assert_ne!(tampered_signature, note);
    assert!(verifier.verify(&tampered_signature).is_err());

    // Cosigning: a second signature by another key leaves ours valid.
    let other_note = other.sign(&body).unwrap();
    let cosigned = format!("{note}{}", other_note.rsplit_once("\n\n").unwrap().1);
    assert!(verifier.verify(&cosigned).is_ok());
    assert!(other.verifier().verify(&cosigned).is_ok());

    let debug = format!("{signer:?}");
    assert!(
        debug.contains(name) && !debug.contains("7, 7") && !debug.contains("0707"),
        "{debug}"
    );
}

#[test]
fn malformed_checkpoints_are_refused() {
    let root = BASE64.encode([0xab; 32]);
    let cases = [
        ("log\n".to_string(), 2, "(size) is missing"),
        ("log\n12\n".to_string(), 3, "(root hash) is missing"),
        (format!("\n1\n{root}\n"), 1, "(origin) is empty"),
        (
            format!("log\n+1\n{root}\n"),
            2,
            "(size) is not a decimal number",
        ),
        (
            format!("log\n1e3\n{root}\n"),
            2,
            "(size) is not a decimal number",
        ),
        (
            format!("log\n18446744073709551616\n{root}\n"),
            2,
            "(size) does not fit in 64 bits",
        ),
        (format!("log\n01\n{root}\n"), 2, "(size) has a leading zero"),
        (
            "log\n1\nnot base64\n".to_string(),
            3,
            "(root hash) is not the base64 of 32 bytes",
        ),
        (
            format!("log\n1\n{}\n", BASE64.encode([0xab; 31])),
            3,
            "(root hash) is not the base64 of 32 bytes",
        ),
        (
            format!("log\n1\n{root}\next\n\n"),
            5,
            "(extension) is empty",
        ),
    ];
    for (body, line, problem) in cases {
        let want = NoteError::InvalidCheckpoint { line, problem };
        assert_eq!(Checkpoint::parse(&body), Err(want), "{body:?}");
    }
    let no_newline = format!("log\n1\n{root}");
    assert_eq!(
        Checkpoint::parse(&no_newline),
        Err(NoteError::MissingFinalNewline)
    );
    let control = format!("lo\tg\n1\n{root}\n");
    assert_eq!(
        Checkpoint::parse(&control),
        Err(NoteError::ControlCharacter(2))
    );
    let err = Checkpoint::parse(&format!("log\nten\n{root}\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint line 2 (size) is not a decimal number"
    );
    let empty = Checkpoint::parse(&format!("log\n0\n{root}\n")).unwrap();
    assert_eq!((empty.size, empty.root), (0, [0xab; 32]));
}

#[test]
fn malformed_notes_and_names_are_refused() {
    let peter = Verifier::parse(PETER_VKEY).unwrap();
    let cases = [
        (TEXT.to_string(), NoteError::MissingSignatures),
        (format!("{TEXT}\n"), NoteError::MissingSignatures),
        (
            format!("{TEXT}\n{}", PETER_SIG.trim_end()),
            NoteError::MissingFinalNewline,
        ),
        (
            format!("\x01{TEXT}\n{PETER_SIG}"),
            NoteError::ControlCharacter(0),
        ),
        (
            format!("{TEXT}\n{PETER_SIG}unexpected line\n"),
            NoteError::MalformedSignature {
                line: 2,
                problem: "does not start with an em dash and a space",
            },
        ),
        (
            format!("{TEXT}\n{}", PETER_SIG.repeat(101)),
            NoteError::TooManySignatures,
        ),
        (
            format!("{}\n{PETER_SIG}", "x".repeat(1 << 20)),
            NoteError::TooLarge((1 << 20) + 1 + PETER_SIG.len()),
        ),
    ];
    for (note, want) in cases {
        assert_eq!(peter.verify(&note), Err(want));
    }
    assert!(
        peter
            .verify(&format!("{TEXT}\n{}", PETER_SIG.repeat(100)))
            .is_ok()
    );

    for name in ["", "a b", "a+b", "a\u{00a0}b"] {
        let key = SigningKey::from_bytes(&[7; 32]);
        assert_eq!(
            Signer::new(name, key).unwrap_err(),
            NoteError::InvalidName(name.into())
        );
    }
    assert_eq!(
        peter_signer().sign("no newline"),
        Err(NoteError::MissingFinalNewline)
    );
}
