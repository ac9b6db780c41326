//! The audit log is append-only and tamper-evident (P4, DESIGN §7).
//!
//! Append-only at three depths: the service's SQL only inserts, its role has no UPDATE, DELETE
//! or TRUNCATE, and a trigger refuses all three to anyone, the superuser included.
//!
//! Tamper-evident: each test plays a database superuser who turns the triggers off and rewrites
//! the log, as strong as such an attacker is (recomputing leaf hashes, the chain and the Merkle
//! nodes, and letting the service sign the result), then exports the log through the API and
//! checks it with the offline verifier. Edits, deletions and swaps show in the bundle alone;
//! truncation, rollback, a fork and a new key pass the bundle alone and are caught by an older
//! checkpoint a witness kept. The attacker's arithmetic is the spec's, from `independent.rs`,
//! not `coffer-tlog`'s.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_audit::bundle::{self, Options, Report, VerifyError};
use coffer_proto::audit::v1 as pb;
use coffer_proto::audit::v1::audit_service_client::AuditServiceClient;
use coffer_proto::events::v1::CredentialCreated;
use coffer_types::OrgId;
use ed25519_dalek::Signer as _;
use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::audit::{audit, export};
use crate::helpers::{Authed, TestApp, TestOrg, spawn_app};
use crate::independent::{self, H, sha};

const TABLES: [&str; 5] = [
    "audit_logs",
    "audit_entries",
    "audit_nodes",
    "audit_signing_keys",
    "audit_checkpoints",
];

/// An org's log, the audit API as its owner, and the database superuser.
struct Log {
    app: TestApp,
    org: TestOrg,
    client: AuditServiceClient<Authed>,
    su: PgPool,
}

impl Log {
    /// A fresh org that created `credentials`; returns once a checkpoint covers every event.
    async fn new(credentials: &[&str]) -> (Self, pb::Checkpoint) {
        let app = spawn_app().await;
        let org = app.new_org("Acme").await;
        let client = audit(&app, &org.owner_key).await;
        let su = app.db.superuser().await;
        let log = Self {
            app,
            org,
            client,
            su,
        };
        // The org's key is generated asynchronously after the org; once it is, the org's
        // events are only those the test causes, so their count is what the log will hold.
        coffer_testkit::eventually("the org key is generated", Duration::from_secs(20), || {
            let (su, org) = (log.su.clone(), log.id());
            async move {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM coffer_credentials.events
                                         WHERE org_id = $1 AND event_type = 'OrgKeyGenerated')",
                )
                .bind(org.as_uuid())
                .fetch_one(&su)
                .await
                .unwrap()
                .then_some(())
            }
        })
        .await;
        log.create(credentials).await;
        let checkpoint = log.signed_at(log.events().await).await;
        (log, checkpoint)
    }

    fn id(&self) -> OrgId {
        self.org.org
    }

    async fn create(&self, credentials: &[&str]) {
        let mut vault = crate::credentials::vault(&self.app, &self.org).await;
        for name in credentials {
            crate::credentials::create(&mut vault, self.id(), name, b"v").await;
        }
    }

    /// How many events the org's services recorded: what an untouched log holds.
    async fn events(&self) -> u64 {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM coffer_enrollment.events WHERE org_id = $1)
                  + (SELECT count(*) FROM coffer_credentials.events WHERE org_id = $1)",
        )
        .bind(self.id().as_uuid())
        .fetch_one(&self.su)
        .await
        .unwrap();
        n as u64
    }

    /// Waits until the org's latest checkpoint is of exactly `size` entries.
    async fn signed_at(&self, size: u64) -> pb::Checkpoint {
        coffer_testkit::eventually(
            &format!("the latest checkpoint is of size {size}"),
            Duration::from_secs(20),
            || {
                let mut client = self.client.clone();
                let org = self.id().to_string();
                async move {
                    client
                        .get_checkpoint(pb::GetCheckpointRequest {
                            org_id: org,
                            size: 0,
                        })
                        .await
                        .ok()
                        .map(|r| r.into_inner())
                        .filter(|c| c.size == size)
                }
            },
        )
        .await
    }

    /// Exports the whole log through the API and checks it offline as this org's log.
    async fn verify(&self, options: Options) -> Result<Report, VerifyError> {
        let file = export(
            &mut self.client.clone(),
            pb::ExportBundleRequest {
                org_id: self.id().to_string(),
                ..Default::default()
            },
        )
        .await;
        bundle::verify(
            file.as_slice(),
            &Options {
                org: Some(self.id()),
                ..options
            },
        )
    }

    /// Verifies the exported log against `witness`, an older checkpoint, which must refuse
    /// it; returns why.
    async fn refused_by(&self, witness: &pb::Checkpoint) -> String {
        let verified = self
            .verify(Options {
                witness: Some(witness.signed_note.clone()),
                ..Default::default()
            })
            .await;
        match verified {
            Err(VerifyError::Witness(why)) => why,
            other => panic!("the witness should refuse the log: {other:?}"),
        }
    }

    /// The exported, verified log's credential names in order of creation.
    async fn credentials_in_log(&self) -> Vec<String> {
        let file = export(
            &mut self.client.clone(),
            pb::ExportBundleRequest {
                org_id: self.id().to_string(),
                ..Default::default()
            },
        )
        .await;
        crate::audit::records(&file)
            .into_iter()
            .filter_map(|r| match r {
                pb::bundle_record::Record::Entry(e) => credential_created(&e.leaf),
                _ => None,
            })
            .collect()
    }

    /// The stored leaves, by position.
    async fn leaves(&self) -> Vec<(u64, Vec<u8>)> {
        leaves(&mut self.su.acquire().await.unwrap(), self.id()).await
    }

    /// The position of the entry recording the creation of credential `name`.
    async fn seq_of(&self, name: &str) -> u64 {
        self.leaves()
            .await
            .into_iter()
            .find(|(_, leaf)| credential_created(leaf).as_deref() == Some(name))
            .unwrap_or_else(|| panic!("the log records the creation of {name}"))
            .0
    }

    /// A superuser transaction with every trigger off: the attacker's session.
    async fn attacker(&self) -> Transaction<'static, Postgres> {
        let mut tx = self.su.begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    }
}

/// The credential name of a `CredentialCreated` leaf.
fn credential_created(leaf: &[u8]) -> Option<String> {
    let event = pb::AuditEntry::decode(leaf).unwrap().event.unwrap();
    (event.event_type == "CredentialCreated").then(|| {
        CredentialCreated::decode(event.payload.as_slice())
            .unwrap()
            .name
    })
}

/// `leaf`, a `CredentialCreated` entry, claiming the credential was named `name`.
fn renamed(leaf: &[u8], name: &str) -> Vec<u8> {
    let mut entry = pb::AuditEntry::decode(leaf).unwrap();
    let event = entry.event.as_mut().unwrap();
    let mut payload = CredentialCreated::decode(event.payload.as_slice()).unwrap();
    payload.name = name.to_owned();
    event.payload = payload.encode_to_vec();
    entry.encode_to_vec()
}

/// `leaf` re-encoded at position `seq`.
fn at_seq(leaf: &[u8], seq: u64) -> Vec<u8> {
    pb::AuditEntry {
        seq,
        ..pb::AuditEntry::decode(leaf).unwrap()
    }
    .encode_to_vec()
}

async fn leaves(conn: &mut PgConnection, org: OrgId) -> Vec<(u64, Vec<u8>)> {
    sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT seq, leaf FROM coffer_audit.audit_entries WHERE org_id = $1 ORDER BY seq",
    )
    .bind(org.as_uuid())
    .fetch_all(conn)
    .await
    .unwrap()
    .into_iter()
    .map(|(seq, leaf)| (seq as u64, leaf))
    .collect()
}

/// Overwrites the leaf bytes at `seq`, nothing else.
async fn set_leaf(conn: &mut PgConnection, org: OrgId, seq: u64, leaf: &[u8]) {
    let changed = sqlx::query(
        "UPDATE coffer_audit.audit_entries SET leaf = $3 WHERE org_id = $1 AND seq = $2",
    )
    .bind(org.as_uuid())
    .bind(seq as i64)
    .bind(leaf)
    .execute(conn)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
}

/// The strong attacker's cover-up: recomputes every stored leaf hash and chain hash from the
/// leaves as they now are, and replaces the Merkle nodes with those of the new leaves. The
/// result is a log the service itself cannot tell from a real one. Returns the leaf hashes.
async fn recompute(conn: &mut PgConnection, org: OrgId) -> Vec<H> {
    let rows = leaves(&mut *conn, org).await;
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq == i as u64 + 1),
        "the attacker recomputes a log without gaps"
    );
    let leaf_hashes: Vec<H> = rows.iter().map(|(_, l)| independent::leaf(l)).collect();
    let chain = independent::chain(&org.to_string(), &leaf_hashes);
    let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s as i64).collect();
    let lh: Vec<&[u8]> = leaf_hashes.iter().map(|h| h.as_slice()).collect();
    let ch: Vec<&[u8]> = chain.iter().map(|h| h.as_slice()).collect();
    sqlx::query(
        "UPDATE coffer_audit.audit_entries e SET leaf_hash = u.leaf_hash, chain_hash = u.chain_hash
           FROM unnest($2::bigint[], $3::bytea[], $4::bytea[]) AS u(seq, leaf_hash, chain_hash)
          WHERE e.org_id = $1 AND e.seq = u.seq",
    )
    .bind(org.as_uuid())
    .bind(&seqs)
    .bind(&lh)
    .bind(&ch)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("DELETE FROM coffer_audit.audit_nodes WHERE org_id = $1")
        .bind(org.as_uuid())
        .execute(&mut *conn)
        .await
        .unwrap();
    let nodes = perfect_subtrees(&leaf_hashes);
    let levels: Vec<i16> = nodes.iter().map(|n| n.0).collect();
    let indexes: Vec<i64> = nodes.iter().map(|n| n.1).collect();
    let hashes: Vec<&[u8]> = nodes.iter().map(|n| n.2.as_slice()).collect();
    sqlx::query(
        "INSERT INTO coffer_audit.audit_nodes (org_id, level, idx, hash)
         SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[])",
    )
    .bind(org.as_uuid())
    .bind(&levels)
    .bind(&indexes)
    .bind(&hashes)
    .execute(&mut *conn)
    .await
    .unwrap();
    leaf_hashes
}

/// Every perfect subtree (level, index, hash) of the RFC 9162 tree over `leaves`, leaves
/// included: what `audit_nodes` holds.
fn perfect_subtrees(leaves: &[H]) -> Vec<(i16, i64, H)> {
    let mut out = Vec::new();
    let mut row = leaves.to_vec();
    let mut level = 0;
    while !row.is_empty() {
        out.extend(row.iter().enumerate().map(|(i, h)| (level, i as i64, *h)));
        row = row
            .chunks_exact(2)
            .map(|pair| sha(&[&[1], &pair[0], &pair[1]]))
            .collect();
        level += 1;
    }
    out
}

/// The C2SP signed-note key hash of an Ed25519 key named `name`.
fn key_hash(name: &str, key: &ed25519_dalek::VerifyingKey) -> [u8; 4] {
    sha(&[name.as_bytes(), b"\n", &[1], key.as_bytes()])[..4]
        .try_into()
        .unwrap()
}

/// The note verifier key of `key` named `name`.
fn verifier_key(name: &str, key: &ed25519_dalek::SigningKey) -> String {
    let public = key.verifying_key();
    format!(
        "{name}+{}+{}",
        hex::encode(key_hash(name, &public)),
        STANDARD.encode([&[1][..], public.as_bytes()].concat())
    )
}

/// A checkpoint of `origin` at `size` with `root`, signed by `key` under the key name
/// `origin`, in C2SP signed-note form.
fn sign_checkpoint(key: &ed25519_dalek::SigningKey, origin: &str, size: u64, root: &H) -> String {
    let body = format!("{origin}\n{size}\n{}\n", STANDARD.encode(root));
    let signature = key.sign(body.as_bytes());
    let blob = [
        &key_hash(origin, &key.verifying_key())[..],
        &signature.to_bytes(),
    ]
    .concat();
    format!("{body}\n\u{2014} {origin} {}\n", STANDARD.encode(blob))
}

/// Every string literal in Rust source `src`, outside `//` comments.
fn string_literals(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                chars.by_ref().find(|&c| c == '\n');
            }
            // A `'"'` char literal opens no string.
            '\'' if chars.peek() == Some(&'"') => {
                chars.next();
            }
            '"' => {
                let mut literal = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            literal.push(c);
                            literal.extend(chars.next());
                        }
                        '"' => break,
                        c => literal.push(c),
                    }
                }
                out.push(literal);
            }
            _ => {}
        }
    }
    out
}

/// Row count and a digest of every row of the org in each audit table.
async fn snapshot(su: &PgPool, org: OrgId) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for table in TABLES {
        out.push(
            sqlx::query_as::<_, (i64, String)>(&format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
                   FROM coffer_audit.{table} t WHERE org_id = $1"
            ))
            .bind(org.as_uuid())
            .fetch_one(su)
            .await
            .unwrap(),
        );
    }
    out
}

/// UPDATE, DELETE and TRUNCATE of the org's rows of `table`, as SQL.
fn changes(table: &str, org: OrgId) -> [(&'static str, String); 3] {
    [
        (
            "UPDATE",
            format!("UPDATE coffer_audit.{table} SET org_id = org_id WHERE org_id = '{org}'"),
        ),
        (
            "DELETE",
            format!("DELETE FROM coffer_audit.{table} WHERE org_id = '{org}'"),
        ),
        ("TRUNCATE", format!("TRUNCATE coffer_audit.{table}")),
    ]
}

#[tokio::test]
async fn p4_the_audit_log_is_append_only_at_three_depths() {
    let (log, _) = Log::new(&["alpha"]).await;
    let org = log.id();
    let before = snapshot(&log.su, org).await;
    assert!(
        before.iter().all(|(rows, _)| *rows > 0),
        "every audit table holds rows of the org: {before:?}"
    );

    // 1. The service's code only inserts: no SQL string in it updates, deletes or truncates.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../audit/src");
    assert_eq!(
        string_literals("q(\"DELETE FROM t\", '\"', \"a \\\"b\\\"\") // \"UPDATE\"\n"),
        ["DELETE FROM t", "a \\\"b\\\""],
        "the scan reads string literals, not comments"
    );
    let mut sql = Vec::new();
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let src = std::fs::read_to_string(&path).unwrap();
            sql.extend(string_literals(&src).into_iter().map(|s| (path.clone(), s)));
        }
    }
    for statement in [
        "INSERT INTO audit_entries",
        "INSERT INTO audit_nodes",
        "INSERT INTO audit_checkpoints",
        "INSERT INTO audit_signing_keys",
        "INSERT INTO audit_logs",
        "FROM audit_entries",
    ] {
        assert!(
            sql.iter().any(|(_, s)| s.contains(statement)),
            "the scan sees the service's SQL, e.g. {statement:?}"
        );
    }
    let changing: Vec<_> = sql
        .iter()
        .filter(|(_, s)| {
            s.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| ["update", "delete", "truncate"].contains(&w.to_lowercase().as_str()))
        })
        .collect();
    assert!(
        changing.is_empty(),
        "the audit service only inserts: {changing:#?}"
    );

    // 2. Its role may read and insert, and nothing else.
    for table in TABLES {
        for (privilege, granted) in [
            ("SELECT", true),
            ("INSERT", true),
            ("UPDATE", false),
            ("DELETE", false),
            ("TRUNCATE", false),
        ] {
            let has: bool =
                sqlx::query_scalar("SELECT has_table_privilege('coffer_audit', $1, $2)")
                    .bind(format!("coffer_audit.{table}"))
                    .bind(privilege)
                    .fetch_one(&log.su)
                    .await
                    .unwrap();
            assert_eq!(has, granted, "{privilege} on {table}");
        }
    }
    let service = log.app.db.service(coffer_audit::SERVICE).await;
    for table in TABLES {
        for (op, statement) in changes(table, org) {
            let mut tx = service.begin_tenant(org).await.unwrap();
            let err = sqlx::raw_sql(&statement)
                .execute(tx.conn())
                .await
                .expect_err(&statement);
            let err = err.as_database_error().expect("a database error");
            assert_eq!(
                (err.code().as_deref(), err.message()),
                (
                    Some("42501"),
                    format!("permission denied for table {table}").as_str()
                ),
                "{op} on {table} as the service role"
            );
        }
    }

    // 3. The trigger refuses even the superuser, who has every privilege.
    for table in TABLES {
        for (op, statement) in changes(table, org) {
            let err = sqlx::raw_sql(&statement)
                .execute(&log.su)
                .await
                .expect_err(&statement);
            assert_eq!(
                err.as_database_error().expect("a database error").message(),
                format!("the audit log is append-only: {op} on coffer_audit.{table} is refused"),
            );
        }
    }

    assert_eq!(snapshot(&log.su, org).await, before, "nothing changed");
    log.verify(Options::default()).await.unwrap();
}

#[tokio::test]
async fn p4_an_edited_payload_is_detected_by_the_chain_and_by_the_signed_root() {
    let (log, checkpoint) = Log::new(&["alpha", "bravo", "charlie"]).await;
    let org = log.id();
    log.verify(Options::default()).await.unwrap();
    let seq = log.seq_of("bravo").await;
    let leaf = log.leaves().await[seq as usize - 1].1.clone();

    // The leaf alone: its stored chain hash no longer follows.
    let mut tx = log.attacker().await;
    set_leaf(&mut tx, org, seq, &renamed(&leaf, "mallory")).await;
    tx.commit().await.unwrap();
    assert_eq!(
        log.credentials_in_log().await,
        ["alpha", "mallory", "charlie"]
    );
    let err = log.verify(Options::default()).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::Chain { seq: s } if s == seq),
        "{err}"
    );
    assert!(err.to_string().contains("the hash chain breaks at entry"));

    // Leaf hashes, chain and tree recomputed: consistent in itself, but not what was signed.
    let mut tx = log.attacker().await;
    let leaf_hashes = recompute(&mut tx, org).await;
    tx.commit().await.unwrap();
    let err = log.verify(Options::default()).await.unwrap_err();
    let VerifyError::Root {
        size,
        computed,
        signed,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*size, checkpoint.size);
    assert_eq!(*computed, hex::encode(independent::mth(&leaf_hashes)));
    assert_eq!(*signed, hex::encode(&checkpoint.root_hash));
    assert!(err.to_string().contains("but the signed checkpoint says"));
}

#[tokio::test]
async fn p4_a_deleted_middle_entry_is_detected_as_a_gap() {
    let (log, checkpoint) = Log::new(&["alpha", "bravo", "charlie"]).await;
    let seq = log.seq_of("bravo").await;
    assert!(1 < seq && seq < checkpoint.size);

    let mut tx = log.attacker().await;
    sqlx::query("DELETE FROM coffer_audit.audit_entries WHERE org_id = $1 AND seq = $2")
        .bind(log.id().as_uuid())
        .bind(seq as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(log.credentials_in_log().await, ["alpha", "charlie"]);

    let err = log.verify(Options::default()).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::Entry { seq: s, reason }
            if *s == seq && *reason == format!("expected here, found entry {} instead", seq + 1)),
        "{err}"
    );
}

#[tokio::test]
async fn p4_swapped_entries_are_detected_by_their_positions_and_by_the_signed_root() {
    let (log, checkpoint) = Log::new(&["alpha", "bravo", "charlie"]).await;
    let org = log.id();
    let (a, b) = (log.seq_of("alpha").await, log.seq_of("bravo").await);
    let stored = log.leaves().await;
    let (leaf_a, leaf_b) = (
        stored[a as usize - 1].1.clone(),
        stored[b as usize - 1].1.clone(),
    );

    // The leaf bytes swapped: each leaf says where it really belongs.
    let mut tx = log.attacker().await;
    set_leaf(&mut tx, org, a, &leaf_b).await;
    set_leaf(&mut tx, org, b, &leaf_a).await;
    tx.commit().await.unwrap();
    let err = log.verify(Options::default()).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::Entry { seq, reason }
            if *seq == a && *reason == format!("its leaf says it is entry {b}")),
        "{err}"
    );

    // The events swapped, each re-encoded at its new position, everything recomputed.
    let mut tx = log.attacker().await;
    set_leaf(&mut tx, org, a, &at_seq(&leaf_b, a)).await;
    set_leaf(&mut tx, org, b, &at_seq(&leaf_a, b)).await;
    recompute(&mut tx, org).await;
    tx.commit().await.unwrap();
    assert_eq!(
        log.credentials_in_log().await,
        ["bravo", "alpha", "charlie"]
    );
    let err = log.verify(Options::default()).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::Root { size, signed, .. }
            if *size == checkpoint.size && *signed == hex::encode(&checkpoint.root_hash)),
        "{err}"
    );
}

#[tokio::test]
async fn p4_a_truncated_tail_is_detected_given_an_older_witnessed_checkpoint() {
    let (log, witness) = Log::new(&["alpha", "bravo", "charlie"]).await;
    let org = log.id();
    // Cut from charlie's creation on: the log then ends as if it was never created.
    let size = log.seq_of("charlie").await - 1;
    assert!(size < witness.size);

    let mut tx = log.attacker().await;
    for statement in [
        "DELETE FROM coffer_audit.audit_entries WHERE org_id = $1 AND seq > $2",
        "DELETE FROM coffer_audit.audit_nodes WHERE org_id = $1 AND ((idx + 1) << level::int) > $2",
        "DELETE FROM coffer_audit.audit_checkpoints WHERE org_id = $1 AND size > $2",
    ] {
        sqlx::query(statement)
            .bind(org.as_uuid())
            .bind(size as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    // The service signs the shorter log, and the bundle alone holds together.
    let signed = log.signed_at(size).await;
    assert_eq!(signed.verifier_key, witness.verifier_key);
    let report = log.verify(Options::default()).await.unwrap();
    assert_eq!((report.size, report.entries), (size, size));
    assert_eq!(log.credentials_in_log().await, ["alpha", "bravo"]);

    // Whoever kept the earlier checkpoint sees entries are gone.
    let why = log.refused_by(&witness).await;
    assert!(
        why.contains(&format!(
            "the log has {size} entries but the witness saw {}: entries were removed from its end or the log was rolled back",
            witness.size
        )),
        "{why}"
    );
}

#[tokio::test]
async fn p4_a_rollback_to_an_older_copy_is_detected_given_a_witnessed_checkpoint() {
    let (log, old) = Log::new(&["alpha", "bravo"]).await;
    let org = log.id();

    // The attacker keeps a copy of the log as it is now.
    let mut tx = log.attacker().await;
    sqlx::raw_sql("CREATE SCHEMA attacker")
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in TABLES {
        sqlx::raw_sql(&format!(
            "CREATE TABLE attacker.{table} AS
                 SELECT * FROM coffer_audit.{table} WHERE org_id = '{org}'"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    // The log grows, and a witness keeps its checkpoint.
    log.create(&["charlie", "delta"]).await;
    let witness = log.signed_at(log.events().await).await;
    assert!(witness.size > old.size);

    // The attacker puts the old copy back.
    let mut tx = log.attacker().await;
    for table in TABLES {
        sqlx::raw_sql(&format!(
            "DELETE FROM coffer_audit.{table} WHERE org_id = '{org}';
             INSERT INTO coffer_audit.{table} SELECT * FROM attacker.{table};"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(log.signed_at(old.size).await.signed_note, old.signed_note);
    let report = log.verify(Options::default()).await.unwrap();
    assert_eq!(report.size, old.size);
    assert_eq!(log.credentials_in_log().await, ["alpha", "bravo"]);
    let why = log.refused_by(&witness).await;
    assert!(why.contains("the log was rolled back"), "{why}");

    // New events land on the old copy until the log is longer than the witnessed one: it is
    // signed again and holds together, but it is not the history the witness saw.
    log.create(&["echo", "foxtrot", "golf"]).await;
    let size = log.events().await - (witness.size - old.size);
    assert!(size > witness.size);
    log.signed_at(size).await;
    let report = log.verify(Options::default()).await.unwrap();
    assert_eq!(report.size, size);
    assert_eq!(
        log.credentials_in_log().await,
        ["alpha", "bravo", "echo", "foxtrot", "golf"]
    );
    let why = log.refused_by(&witness).await;
    assert!(
        why.contains(&format!("at size {} the log's root is", witness.size))
            && why.contains("the log was forked or rewritten"),
        "{why}"
    );
}

#[tokio::test]
async fn p4_a_forked_log_is_detected_given_a_witnessed_checkpoint() {
    let (log, witness) = Log::new(&["alpha", "bravo"]).await;
    let org = log.id();
    let seq = log.seq_of("alpha").await;
    let leaf = log.leaves().await[seq as usize - 1].1.clone();

    // Another history of the same size: alpha was "mallory", every hash recomputed, and the
    // checkpoints that would contradict it removed, so the service signs the fork itself.
    let mut tx = log.attacker().await;
    set_leaf(&mut tx, org, seq, &renamed(&leaf, "mallory")).await;
    recompute(&mut tx, org).await;
    sqlx::query("DELETE FROM coffer_audit.audit_checkpoints WHERE org_id = $1")
        .bind(org.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let fork = log.signed_at(witness.size).await;
    assert_ne!(fork.root_hash, witness.root_hash);
    assert_eq!(fork.verifier_key, witness.verifier_key, "the org's own key");
    let report = log.verify(Options::default()).await.unwrap();
    assert_eq!(report.size, witness.size);
    assert_eq!(log.credentials_in_log().await, ["mallory", "bravo"]);

    let why = log.refused_by(&witness).await;
    assert!(
        why.contains(&format!(
            "at size {} the log's root is {} but the witness signed {}: the log was forked or rewritten",
            witness.size,
            hex::encode(&fork.root_hash),
            hex::encode(&witness.root_hash)
        )),
        "{why}"
    );
}

#[tokio::test]
async fn p4_a_checkpoint_signed_with_another_key_is_detected() {
    let (log, witness) = Log::new(&["alpha", "bravo"]).await;
    let org = log.id();
    let origin = witness.signed_note.lines().next().unwrap().to_owned();
    assert_eq!(origin, format!("coffer/audit/{org}"));
    let attacker = ed25519_dalek::SigningKey::from_bytes(&sha(&[b"the attacker's key"]));
    let seq = log.seq_of("alpha").await;
    let leaf = log.leaves().await[seq as usize - 1].1.clone();

    // The log rewritten and its checkpoint signed again under the log's name, by another key.
    let mut tx = log.attacker().await;
    set_leaf(&mut tx, org, seq, &renamed(&leaf, "mallory")).await;
    let root = independent::mth(&recompute(&mut tx, org).await);
    sqlx::query(
        "UPDATE coffer_audit.audit_checkpoints SET root_hash = $3, signed_note = $4
          WHERE org_id = $1 AND size = $2",
    )
    .bind(org.as_uuid())
    .bind(witness.size as i64)
    .bind(root.as_slice())
    .bind(sign_checkpoint(&attacker, &origin, witness.size, &root))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let err = log.verify(Options::default()).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::Signature(m)
            if m.starts_with(&format!("the checkpoint does not verify with {}", witness.verifier_key))),
        "{err}"
    );

    // The stored public key replaced too: the bundle now presents the attacker's key and holds
    // together on its own. The key the org pinned, or its older checkpoint, gives it away.
    let mut tx = log.attacker().await;
    sqlx::query("UPDATE coffer_audit.audit_signing_keys SET public_key = $2 WHERE org_id = $1")
        .bind(org.as_uuid())
        .bind(attacker.verifying_key().as_bytes().as_slice())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let report = log.verify(Options::default()).await.unwrap();
    assert_eq!(report.verifier_key, verifier_key(&origin, &attacker));
    assert_eq!(log.credentials_in_log().await, ["mallory", "bravo"]);

    let err = log
        .verify(Options {
            key: Some(witness.verifier_key.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VerifyError::Signature(m) if *m == format!(
            "the bundle is signed by {}, not by the expected key {}",
            verifier_key(&origin, &attacker),
            witness.verifier_key
        )),
        "{err}"
    );
    let why = log.refused_by(&witness).await;
    assert!(
        why.contains("the log's signing key changed or the bundle was signed by someone else"),
        "{why}"
    );
}
