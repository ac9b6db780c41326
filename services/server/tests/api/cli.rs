//! The `coffer` client commands as a user runs them: the built binary against a running server.

use std::process::{Output, Stdio};

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::helpers::{TestApp, spawn_app};

/// Runs `coffer <args>` against `app` as `api_key` (given through `COFFER_API_KEY`).
async fn coffer(app: &TestApp, api_key: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env("COFFER_SERVER", app.url())
        .env("COFFER_API_KEY", api_key)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run coffer")
}

/// Runs `coffer <args>` like [`coffer`], with `stdin` piped in.
async fn coffer_with_stdin(app: &TestApp, api_key: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env("COFFER_SERVER", app.url())
        .env("COFFER_API_KEY", api_key)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run coffer");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    child.wait_with_output().await.expect("run coffer")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "coffer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `coffer … --json`: one JSON document on stdout.
async fn json(app: &TestApp, api_key: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = coffer(app, api_key, &args).await;
    serde_json::from_str(&stdout(&out)).expect("stdout is one JSON document")
}

/// The one `coffer: …` line a failure prints.
fn failure_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].starts_with("coffer: "), "{stderr}");
    lines[0].to_owned()
}

#[tokio::test]
async fn the_cli_creates_an_org_and_manages_its_members_and_api_keys() {
    let app = spawn_app().await;
    let platform = app.platform_key.clone();

    let created = json(
        &app,
        &platform,
        &["org", "create", "Acme", "--owner-email", "owner@acme.test"],
    )
    .await;
    let org_id = created["org"]["org_id"].as_str().unwrap().to_owned();
    assert_eq!(created["org"]["name"], "Acme");
    assert_eq!(created["owner"]["email"], "owner@acme.test");
    assert_eq!(created["owner"]["role"], "owner");
    let owner = created["owner_api_key"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(owner.starts_with("coffer_"));
    assert_eq!(created["owner_api_key"]["key"]["role"], "owner");

    // --org defaults to the key's org.
    let org = json(&app, &owner, &["org", "get"]).await;
    assert_eq!(
        (org["org_id"].as_str(), &org["name"]),
        (Some(&*org_id), &"Acme".into())
    );

    // Members.
    let bob = json(
        &app,
        &owner,
        &["user", "add", "Bob@Acme.test", "--role", "operator"],
    )
    .await;
    assert_eq!(
        (&bob["email"], &bob["role"]),
        (&"bob@acme.test".into(), &"operator".into())
    );
    let bob_id = bob["user_id"].as_str().unwrap().to_owned();
    let listed = json(&app, &owner, &["user", "list", "--org", &org_id]).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let table = stdout(&coffer(&app, &owner, &["user", "list"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("USER ID"), "{table}");
    let column = |line: &str, text: &str| line.find(text).unwrap();
    let bob_line = lines.iter().find(|l| l.contains("bob@acme.test")).unwrap();
    assert!(bob_line.starts_with(&bob_id), "{table}");
    assert_eq!(
        column(lines[0], "EMAIL"),
        column(bob_line, "bob@acme.test"),
        "{table}"
    );
    assert_eq!(
        column(lines[0], "ROLE"),
        column(bob_line, "operator"),
        "{table}"
    );
    assert_eq!(
        column(lines[0], "STATUS"),
        column(bob_line, "active"),
        "{table}"
    );

    let changed = json(&app, &owner, &["user", "set-role", &bob_id, "admin"]).await;
    assert_eq!(changed["role"], "admin");
    let suspended = json(
        &app,
        &owner,
        &["user", "suspend", &bob_id, "--reason", "on leave"],
    )
    .await;
    assert_eq!(suspended["suspended"], true);
    let back = json(&app, &owner, &["user", "reactivate", &bob_id]).await;
    assert_eq!(back["suspended"], false);
    let removed = json(&app, &owner, &["user", "remove", &bob_id]).await;
    assert_eq!(
        (&removed["user_id"], &removed["removed"]),
        (&bob_id.clone().into(), &true.into())
    );
    let listed = json(&app, &owner, &["user", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // API keys.
    let ci = json(
        &app,
        &owner,
        &[
            "apikey",
            "create",
            "ci",
            "--role",
            "operator",
            "--scope",
            "job.run",
            "--expires-in",
            "30d",
        ],
    )
    .await;
    let ci_secret = ci["secret"].as_str().unwrap();
    assert!(ci_secret.starts_with("coffer_"));
    assert_eq!(
        ci["key"]["display_prefix"].as_str().unwrap(),
        &ci_secret[..12]
    );
    assert_eq!(ci["key"]["scopes"], serde_json::json!(["job.run"]));
    let expires: chrono::DateTime<chrono::Utc> =
        ci["key"]["expires_at"].as_str().unwrap().parse().unwrap();
    let in_30_days = chrono::Utc::now() + chrono::Duration::days(30);
    assert!((in_30_days - expires).num_seconds().abs() < 60, "{expires}");
    let ci_id = ci["key"]["key_id"].as_str().unwrap().to_owned();
    // The new key works.
    let as_ci = json(&app, ci_secret, &["token", "exchange"]).await;
    assert_eq!(
        (&as_ci["org_id"], &as_ci["role"]),
        (&org_id.clone().into(), &"operator".into())
    );

    // Without --json the secret is printed once, after a label saying so.
    let human = stdout(
        &coffer(
            &app,
            &owner,
            &["apikey", "create", "deploy", "--role", "viewer"],
        )
        .await,
    );
    let lines: Vec<&str> = human.lines().collect();
    let label = lines
        .iter()
        .position(|l| l.ends_with("secret (shown once, store it now):"))
        .unwrap_or_else(|| panic!("no secret label in: {human}"));
    assert!(lines[label + 1].starts_with("coffer_"), "{human}");
    assert_eq!(
        human.matches("coffer_").count(),
        2,
        "prefix in the table, secret once: {human}"
    );

    let keys = json(&app, &owner, &["apikey", "list"]).await;
    let names: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"ci") && names.contains(&"deploy"));
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("secret").is_none()),
        "listing shows no secret"
    );
    let revoked = json(
        &app,
        &owner,
        &["apikey", "revoke", &ci_id, "--reason", "leaked"],
    )
    .await;
    assert_eq!(revoked["revoked"], true);
}

#[tokio::test]
async fn the_cli_creates_enrollment_tokens_and_lists_revokes_and_publishes_agents() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let key = &acme.owner_key;
    let dir = tempfile::tempdir().unwrap();

    let created = json(
        &app,
        key,
        &["agent", "token", "create", "db-host-1", "--ttl", "2h"],
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("coffer_enroll_"), "{created}");
    assert_eq!(created["token"]["name"], "db-host-1");
    let token_id = created["token"]["token_id"].as_str().unwrap().to_owned();

    // Without --json the secret is printed once, after a label saying so.
    let human = stdout(&coffer(&app, key, &["agent", "token", "create", "db-host-2"]).await);
    let lines: Vec<&str> = human.lines().collect();
    let label = lines
        .iter()
        .position(|l| l.ends_with("secret (shown once, works once, store it now):"))
        .unwrap_or_else(|| panic!("no secret label in: {human}"));
    assert!(lines[label + 1].starts_with("coffer_enroll_"), "{human}");
    let unused_id = lines[1].split_whitespace().next().unwrap().to_owned();

    let enrolled = crate::agents::enroll(&app, &secret, &crate::agents::csr(dir.path(), "EC", &[]))
        .await
        .unwrap();

    let table = stdout(&coffer(&app, key, &["agent", "token", "list"]).await);
    let used = table.lines().find(|l| l.starts_with(&token_id)).unwrap();
    assert!(
        used.contains("used") && used.contains(&enrolled.agent_id),
        "{table}"
    );
    let revoked = json(
        &app,
        key,
        &[
            "agent",
            "token",
            "revoke",
            &unused_id,
            "--reason",
            "not needed",
        ],
    )
    .await;
    assert_eq!(revoked["revoked"], true);

    let agents = json(&app, key, &["agent", "list"]).await;
    assert_eq!(agents.as_array().unwrap().len(), 1);
    assert_eq!(agents[0]["agent_id"], enrolled.agent_id.as_str());
    let agent = json(&app, key, &["agent", "get", &enrolled.agent_id]).await;
    assert_eq!(agent["serial"], enrolled.serial.as_str());
    let table = stdout(&coffer(&app, key, &["agent", "list"]).await);
    assert!(table.starts_with("AGENT ID"), "{table}");
    assert!(table.contains("active"), "{table}");

    let revoked = json(
        &app,
        key,
        &[
            "agent",
            "revoke",
            &enrolled.agent_id,
            "--reason",
            "host retired",
        ],
    )
    .await;
    assert_eq!(revoked["revoked"], true);

    // `agent crl` prints PEM that stock openssl reads, with the revoked serial on it.
    let pem = stdout(&coffer(&app, key, &["agent", "crl"]).await);
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");
    let crl = crate::agents::write(dir.path(), "crl.pem", &pem);
    let text = crate::agents::openssl(dir.path(), &["crl", "-in", &crl, "-noout", "-text"]);
    let text = String::from_utf8_lossy(&text.stdout).to_uppercase();
    assert!(text.contains(&enrolled.serial.to_uppercase()), "{text}");
    let doc = json(&app, key, &["agent", "crl"]).await;
    assert!(doc["number"].as_u64().unwrap() >= 1, "{doc}");

    // Another org's ids are not found.
    let other = app.new_org("Other").await;
    let out = coffer(
        &app,
        &other.owner_key,
        &["agent", "get", &enrolled.agent_id],
    )
    .await;
    assert!(failure_line(&out).contains("not found"), "{out:?}");
}

#[tokio::test]
async fn the_cli_stores_credentials_from_stdin_or_a_file_never_prints_them_and_exports_the_recovery_key()
 {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let key = &acme.owner_key;
    let dir = tempfile::tempdir().unwrap();
    let from_stdin = "stdin-secret-4f9a1c";
    let from_file = "file-secret-7c1e2b\n";
    let replacement = "replacement-secret-d83e05";
    // Every output of a command that was handed a value, checked for the value at the end.
    let mut outputs = Vec::new();

    // From stdin, one trailing newline is removed.
    let out = coffer_with_stdin(
        &app,
        key,
        &[
            "credential",
            "create",
            "prod/orders-db",
            "--purpose",
            "database",
            "--json",
        ],
        format!("{from_stdin}\n").as_bytes(),
    )
    .await;
    let created: Value = serde_json::from_str(&stdout(&out)).unwrap();
    outputs.push(out);
    assert_eq!(
        (
            &created["name"],
            &created["purpose"],
            &created["version"],
            &created["value_bytes"]
        ),
        (
            &"prod/orders-db".into(),
            &"database".into(),
            &1.into(),
            &from_stdin.len().into()
        )
    );
    let db_id = created["credential_id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["vault_ref"],
        format!("vault:coffer/{}/{db_id}", acme.org)
    );

    // From a file, byte for byte (its newline included); shown as a table.
    let path = dir.path().join("bucket.key");
    std::fs::write(&path, from_file).unwrap();
    let out = coffer(
        &app,
        key,
        &[
            "credential",
            "create",
            "prod/bucket",
            "--purpose",
            "storage",
            "--value-file",
            path.to_str().unwrap(),
        ],
    )
    .await;
    let table = stdout(&out);
    outputs.push(out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("CREDENTIAL ID"), "{table}");
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        columns[1..5],
        ["prod/bucket", "storage", "1", &from_file.len().to_string()],
        "{table}"
    );
    let bucket_id = columns[0].to_owned();

    // A value is never taken from the command line, and an empty one is never sent.
    let out = coffer(
        &app,
        key,
        &[
            "credential",
            "create",
            "x",
            "--purpose",
            "generic",
            "--value",
            "hunter2-on-argv",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--value'"),
        "{out:?}"
    );
    outputs.push(out);
    let out = coffer(
        &app,
        key,
        &["credential", "create", "x", "--purpose", "generic"],
    )
    .await;
    assert_eq!(failure_line(&out), "coffer: the value is empty");

    // List and get: metadata only.
    let listed = json(&app, key, &["credential", "list"]).await;
    let mut names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["prod/bucket", "prod/orders-db"]);
    let table = stdout(&coffer(&app, key, &["credential", "list"]).await);
    assert!(table.starts_with("CREDENTIAL ID"), "{table}");
    assert!(
        table.contains(&db_id) && table.contains(&bucket_id),
        "{table}"
    );
    let got = json(&app, key, &["credential", "get", &db_id]).await;
    assert_eq!(got, created);

    // Replace: version 2.
    let out = coffer_with_stdin(
        &app,
        key,
        &["credential", "replace", &db_id, "--json"],
        replacement.as_bytes(),
    )
    .await;
    let replaced: Value = serde_json::from_str(&stdout(&out)).unwrap();
    outputs.push(out);
    assert_eq!(
        (&replaced["version"], &replaced["value_bytes"]),
        (&2.into(), &replacement.len().into())
    );
    let got = json(&app, key, &["credential", "get", &db_id]).await;
    assert_eq!(got["version"], 2);

    // Delete, with a reason: then it is not found.
    let deleted = json(
        &app,
        key,
        &[
            "credential",
            "delete",
            &db_id,
            "--reason",
            "database retired",
        ],
    )
    .await;
    assert_eq!(
        (&deleted["credential_id"], &deleted["deleted"]),
        (&db_id.as_str().into(), &true.into())
    );
    let out = coffer(&app, key, &["credential", "get", &db_id]).await;
    assert!(
        failure_line(&out).starts_with("coffer: get credential: not found"),
        "{out:?}"
    );
    let listed = json(&app, key, &["credential", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    for out in &outputs {
        for value in [
            from_stdin,
            from_file.trim_end(),
            replacement,
            "hunter2-on-argv",
        ] {
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains(value)
                    && !String::from_utf8_lossy(&out.stderr).contains(value),
                "a credential value was printed: {out:?}"
            );
        }
    }

    // The org's recipient, once its key pair is generated.
    let recipient = coffer_testkit::eventually(
        "the org key is generated",
        Duration::from_secs(10),
        || async {
            let out = coffer(&app, key, &["org-key", "recipient", "--json"]).await;
            out.status
                .success()
                .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
        },
    )
    .await;
    let age_recipient = recipient["recipient"].as_str().unwrap().to_owned();
    assert!(age_recipient.starts_with("age1"), "{recipient}");
    let table = stdout(&coffer(&app, key, &["org-key", "recipient"]).await);
    assert!(table.starts_with("ORG ID"), "{table}");
    assert!(table.contains(&age_recipient), "{table}");

    // Only an owner exports the recovery key; it is printed after a label saying it is secret.
    let admin = app.new_api_key(&acme, "admin").await;
    let out = coffer(
        &app,
        &admin,
        &["org-key", "export-recovery-key", "--reason", "drill"],
    )
    .await;
    assert!(
        failure_line(&out).starts_with("coffer: export the recovery key: permission denied"),
        "{out:?}"
    );
    let human = stdout(
        &coffer(
            &app,
            key,
            &["org-key", "export-recovery-key", "--reason", "drill"],
        )
        .await,
    );
    let lines: Vec<&str> = human.lines().collect();
    let label = lines
        .iter()
        .position(|l| {
            l.starts_with("recovery key secret (") && l.ends_with("store it offline now):")
        })
        .unwrap_or_else(|| panic!("no secret label in: {human}"));
    assert!(lines[label + 1].starts_with("AGE-SECRET-KEY-1"), "{human}");
    assert!(human.contains(&age_recipient), "{human}");
    let exported = json(
        &app,
        key,
        &[
            "org-key",
            "export-recovery-key",
            "--reason",
            "disaster-recovery drill",
        ],
    )
    .await;
    assert_eq!(exported["identity"].as_str(), Some(lines[label + 1]));
    assert_eq!(exported["recipient"].as_str(), Some(age_recipient.as_str()));
}

#[tokio::test]
async fn the_cli_shows_master_key_coverage_and_rotates_onto_the_configured_master_key_waiting_for_it()
 {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let platform = app.platform_key.clone();
    stdout(
        &coffer_with_stdin(
            &app,
            &acme.owner_key,
            &["credential", "create", "prod/db", "--purpose", "database"],
            b"a value",
        )
        .await,
    );

    // Coverage as a table, once the org's age key is generated, then as JSON.
    let table = coffer_testkit::eventually(
        "the org key is generated",
        Duration::from_secs(10),
        || async {
            let table = stdout(&coffer(&app, &platform, &["master-key", "coverage"]).await);
            table.contains("org_age_key").then_some(table)
        },
    )
    .await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("PURPOSE"), "{table}");
    let rows: Vec<Vec<&str>> = lines[1..3]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["credential_dek", "test-master", "1"],
            ["org_age_key", "test-master", "1"]
        ],
        "{table}"
    );
    assert_eq!(
        lines[3],
        "0 wrapped keys are not under the current master key (test-master)"
    );
    let coverage = json(&app, &platform, &["master-key", "coverage"]).await;
    assert_eq!(
        (&coverage["current_key_id"], &coverage["not_under_current"]),
        (&"test-master".into(), &0.into())
    );
    assert_eq!(
        coverage["entries"][0],
        serde_json::json!({
            "purpose": "credential_dek",
            "kms_key_id": "test-master",
            "wrapped_keys": 1,
        })
    );
    let status = json(&app, &platform, &["master-key", "status"]).await;
    assert_eq!(
        (&status["state"], &status["current_key_id"]),
        (&"none".into(), &"test-master".into())
    );

    // Not onto a key the server is not configured with.
    let out = coffer(
        &app,
        &platform,
        &["master-key", "rotate", "--to", "other-key", "--reason", "r"],
    )
    .await;
    let line = failure_line(&out);
    assert!(
        line.starts_with("coffer: start the master-key rotation: failed precondition")
            && line.contains("test-master"),
        "{line}"
    );

    // Onto the configured key, following it to the end.
    let out = stdout(
        &coffer(
            &app,
            &platform,
            &[
                "master-key",
                "rotate",
                "--to",
                "test-master",
                "--reason",
                "r",
                "--wait",
            ],
        )
        .await,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() >= 3 && lines[0] == "rewrapped 0, remaining 0",
        "{out}"
    );
    assert!(lines[lines.len() - 2].starts_with("ROTATION"), "{out}");
    assert_eq!(
        lines[lines.len() - 1]
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "1",
            "completed",
            "test-master",
            "0",
            "0",
            "0",
            "test-master",
            "r"
        ],
        "{out}"
    );
    let status = json(&app, &platform, &["master-key", "status"]).await;
    assert_eq!(
        (
            &status["state"],
            &status["number"],
            &status["to_key_id"],
            &status["reason"],
            &status["remaining"]
        ),
        (
            &"completed".into(),
            &1.into(),
            &"test-master".into(),
            &"r".into(),
            &0.into()
        )
    );

    // A customer org's owner is told the platform's key does not exist for them.
    let out = coffer(&app, &acme.owner_key, &["master-key", "status"]).await;
    assert!(
        failure_line(&out).starts_with("coffer: get the master-key rotation: not found"),
        "{out:?}"
    );
}

#[tokio::test]
async fn the_cli_shows_an_access_token_only_when_asked() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let key = &acme.owner_key;

    let plain = stdout(&coffer(&app, key, &["token", "exchange"]).await);
    assert!(plain.contains("hidden; pass --show to print it"), "{plain}");
    assert!(plain.contains(&acme.org.to_string()), "{plain}");
    let doc = json(&app, key, &["token", "exchange"]).await;
    assert!(doc.get("access_token").is_none(), "{doc}");
    assert_eq!(doc["role"], "owner");

    let shown = json(&app, key, &["token", "exchange", "--show"]).await;
    let token = shown["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a compact JWS");
    assert!(!plain.contains(token));

    let jwks = json(&app, key, &["token", "jwks"]).await;
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    let table = stdout(&coffer(&app, key, &["token", "jwks"]).await);
    assert!(table.starts_with("KID"), "{table}");
    assert!(table.contains("EdDSA"), "{table}");
}

#[tokio::test]
async fn cli_failures_are_one_line_and_never_show_the_key() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;

    let bad_key = "coffer_0123456789abcdefghijklmnopqrstuvwxyzAB";
    let out = coffer(&app, bad_key, &["user", "list"]).await;
    assert_eq!(
        failure_line(&out),
        format!(
            "coffer: connect to {}: unauthenticated: invalid credentials",
            app.url()
        )
    );
    let out = coffer(&app, bad_key, &["user", "list", "--api-key", bad_key]).await;
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&bad_key[7..]));

    let out = coffer(
        &app,
        &acme.owner_key,
        &["user", "remove", &coffer_types::UserId::new().to_string()],
    )
    .await;
    let line = failure_line(&out);
    assert!(
        line.starts_with("coffer: remove member: not found: "),
        "{line}"
    );

    let out = coffer(
        &app,
        &acme.owner_key,
        &["user", "set-role", &acme.owner_user_id, "viewer"],
    )
    .await;
    assert_eq!(
        failure_line(&out),
        "coffer: change role: failed precondition: an org must keep at least one active owner"
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["org", "get", "--server", &app.url()])
        .env_remove("COFFER_API_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(
        failure_line(&out),
        "coffer: an API key is needed: pass --api-key or set COFFER_API_KEY"
    );
}

/// Runs `coffer <args>` with an empty environment (`PATH` only): no server, configuration or
/// API key.
async fn coffer_offline(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run coffer")
}

/// How many events `org` has recorded so far, across the services that record them.
pub(crate) async fn org_events(app: &TestApp, org: coffer_types::OrgId) -> u64 {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM coffer_enrollment.events WHERE org_id = $1)
              + (SELECT count(*) FROM coffer_credentials.events WHERE org_id = $1)",
    )
    .bind(org.as_uuid())
    .fetch_one(&app.db.superuser().await)
    .await
    .unwrap();
    u64::try_from(n).unwrap()
}

/// Waits until every event of `org` so far is under a checkpoint; returns that size.
async fn logged(app: &TestApp, org: &crate::helpers::TestOrg) -> u64 {
    let n = org_events(app, org.org).await;
    let client = crate::audit::audit(app, &org.owner_key).await;
    let size = crate::audit::checkpoint_of_at_least(&client, org.org, n)
        .await
        .size;
    assert_eq!(size, n, "nothing else happens in the org meanwhile");
    size
}

/// An org with its key pair generated and credentials `names` created; returns their ids.
async fn org_with_credentials(
    app: &TestApp,
    org: &crate::helpers::TestOrg,
    names: &[&str],
) -> Vec<String> {
    crate::credentials::recipient(app, org).await;
    let mut vault = crate::credentials::vault(app, org).await;
    let mut ids = Vec::new();
    for name in names {
        let created = crate::credentials::create(&mut vault, org.org, name, b"value").await;
        ids.push(created.credential_id);
    }
    ids
}

#[tokio::test]
async fn the_cli_exports_the_audit_log_and_verifies_it_offline_with_and_without_a_witness() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let key = &acme.owner_key;
    let org = acme.org.to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    let mut created = org_with_credentials(&app, &acme, &["a", "b"]).await;
    let early = logged(&app, &acme).await;

    // An early checkpoint, checked and kept as a witness; printed as-is without --out.
    let witness = path("witness");
    let saved = stdout(&coffer(&app, key, &["audit", "checkpoint", "--out", &witness]).await);
    assert!(
        saved.starts_with(&format!("saved the checkpoint of size {early} ")),
        "{saved}"
    );
    let note = std::fs::read_to_string(&witness).unwrap();
    assert!(
        note.starts_with(&format!("coffer/audit/{org}\n{early}\n")),
        "{note}"
    );
    let printed = coffer(
        &app,
        key,
        &["audit", "checkpoint", "--size", &early.to_string()],
    )
    .await;
    assert_eq!(stdout(&printed), note);

    let more = org_with_credentials(&app, &acme, &["c", "d"]).await;
    created.extend(more);
    let size = logged(&app, &acme).await;
    assert!(size > early);

    // Queries: by action, exactly the credentials created; pages with their next token.
    let found = json(
        &app,
        key,
        &["audit", "query", "--action", "CredentialCreated"],
    )
    .await;
    let aggregates: Vec<&str> = found["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["aggregate_id"].as_str().unwrap())
        .collect();
    assert_eq!(aggregates, created);
    assert!(found["next_page_token"].is_null(), "{found}");
    let table = stdout(&coffer(&app, key, &["audit", "query", "--limit", "2"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("SEQ  OCCURRED"), "{table}");
    assert!(lines[1].starts_with("1 "), "{table}");
    let token = lines[3].strip_prefix("next page: --page-token ").unwrap();
    let next = stdout(
        &coffer(
            &app,
            key,
            &["audit", "query", "--limit", "2", "--page-token", token],
        )
        .await,
    );
    assert!(next.lines().nth(1).unwrap().starts_with("3 "), "{next}");

    // An entry, its inclusion checked here against the latest or an older checkpoint.
    let first = json(&app, key, &["audit", "query", "--limit", "1"]).await;
    let first_event = first["entries"][0]["event"]["event_id"].as_str().unwrap();
    let shown = stdout(&coffer(&app, key, &["audit", "entry", "1"]).await);
    assert!(shown.contains(first_event), "{shown}");
    assert!(shown.contains("verified here:"), "{shown}");
    assert!(
        shown.contains(&format!("checkpoint  size {size}, root ")),
        "{shown}"
    );
    assert!(
        shown.contains("leads from leaf index 0 to the signed root"),
        "{shown}"
    );
    let shown = stdout(
        &coffer(
            &app,
            key,
            &["audit", "entry", "3", "--tree-size", &early.to_string()],
        )
        .await,
    );
    assert!(
        shown.contains(&format!("checkpoint  size {early}, root ")),
        "{shown}"
    );

    // Consistency, checked here; roots of issued checkpoints against their signatures.
    let checkpoints = json(&app, key, &["audit", "checkpoints"]).await;
    let root_at = |n: u64| {
        checkpoints["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["size"] == n)
            .map(|c| c["root_hash"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (early_root, root) = (root_at(early), root_at(size));
    let proved = stdout(
        &coffer(
            &app,
            key,
            &[
                "audit",
                "consistency",
                "--from",
                &early.to_string(),
                "--to",
                &size.to_string(),
            ],
        )
        .await,
    );
    assert!(
        proved.starts_with("verified here: the RFC 9162 consistency proof"),
        "{proved}"
    );
    assert!(
        proved.contains(&format!("is a prefix of the log at size {size}")),
        "{proved}"
    );
    for r in [&early_root, &root] {
        assert!(
            proved.contains(&format!(
                "root {r}: the signed checkpoint of this size says so"
            )),
            "{proved}"
        );
    }
    let proved = stdout(
        &coffer(
            &app,
            key,
            &[
                "audit",
                "consistency",
                "--from",
                "1",
                "--to",
                &size.to_string(),
            ],
        )
        .await,
    );
    assert!(proved.starts_with("verified here:"), "{proved}");

    // Export, then verify with no server, configuration or key.
    let bundle = path("bundle");
    let exported = json(&app, key, &["audit", "export", "--out", &bundle]).await;
    assert_eq!(
        (&exported["entries"], &exported["checkpoint_size"]),
        (&size.into(), &size.into())
    );
    assert!(!std::path::Path::new(&format!("{bundle}.partial")).exists());
    let report = stdout(&coffer_offline(&["audit", "verify", &bundle]).await);
    assert!(
        report.starts_with(&format!("verified {bundle}\n")),
        "{report}"
    );
    assert!(
        report.contains(&format!("{size} checked: 1..={size}")),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "{root}: recomputed from the entries, it matches the signed checkpoint of size {size}"
        )),
        "{report}"
    );
    assert!(
        report.contains("no witness given: truncation, rollback and forks cannot be ruled out"),
        "{report}"
    );

    // With the witness kept earlier and the key pinned.
    let vkey = checkpoints["checkpoints"][0]["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = stdout(
        &coffer_offline(&[
            "audit",
            "verify",
            &bundle,
            "--witness",
            &witness,
            "--org",
            &org,
            "--key",
            &vkey,
        ])
        .await,
    );
    assert!(
        report.contains(&format!(
            "consistent with the witnessed checkpoint of size {early}: its root recomputed from \
             the bundle's entries"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!("{vkey} (the key given with --key)")),
        "{report}"
    );

    // A bundle starting after the witness size (entries before it summarised by subtree
    // hashes that do not cover the witness exactly) proves consistency through its proof.
    let after = early + 2;
    let tail = path("tail");
    let exported = json(
        &app,
        key,
        &[
            "audit",
            "export",
            "--out",
            &tail,
            "--from-seq",
            &after.to_string(),
            "--consistency-from",
            &early.to_string(),
        ],
    )
    .await;
    assert_eq!(exported["entries"], size + 1 - after);
    let out = coffer_offline(&["audit", "verify", &tail, "--witness", &witness, "--json"]).await;
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (
            &doc["from_seq"],
            &doc["entries"],
            &doc["size"],
            &doc["root"]
        ),
        (
            &after.into(),
            &(size + 1 - after).into(),
            &size.into(),
            &root.clone().into()
        )
    );
    assert_eq!(
        doc["witness"],
        serde_json::json!({"size": early, "check": "consistency_proof"})
    );
    let report = stdout(&coffer_offline(&["audit", "verify", &tail, "--witness", &witness]).await);
    assert!(
        report.contains("through the bundle's RFC 9162 consistency proof"),
        "{report}"
    );

    // Without the proof, such a bundle cannot show it is consistent with the witness.
    let bare = path("bare");
    stdout(
        &coffer(
            &app,
            key,
            &[
                "audit",
                "export",
                "--out",
                &bare,
                "--from-seq",
                &after.to_string(),
            ],
        )
        .await,
    );
    let out = coffer_offline(&["audit", "verify", &bare, "--witness", &witness]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "audit verify: FAILED: inconsistent with the witnessed checkpoint: the bundle starts \
             after the witness size {early} and carries no consistency proof from it"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn coffer_audit_verify_refuses_bad_bundles_with_a_clear_error_and_a_non_zero_exit() {
    use coffer_proto::audit::v1 as pb;
    use coffer_proto::audit::v1::bundle_record::Record;
    use prost::Message;

    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    org_with_credentials(&app, &acme, &["a", "b"]).await;
    org_with_credentials(&app, &other, &[]).await;
    logged(&app, &acme).await;
    logged(&app, &other).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    let (bundle, theirs, their_witness) = (path("acme"), path("other"), path("other-witness"));
    stdout(
        &coffer(
            &app,
            &acme.owner_key,
            &["audit", "export", "--out", &bundle],
        )
        .await,
    );
    stdout(
        &coffer(
            &app,
            &other.owner_key,
            &["audit", "export", "--out", &theirs],
        )
        .await,
    );
    let their_checkpoint = json(
        &app,
        &other.owner_key,
        &["audit", "checkpoint", "--out", &their_witness],
    )
    .await;
    let their_key = their_checkpoint["verifier_key"].as_str().unwrap();
    let our_key = json(&app, &acme.owner_key, &["audit", "checkpoint"]).await["verifier_key"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bundles rebuilt from the real one's records: cut at a record boundary, cut inside an
    // entry, and with one leaf rewritten.
    let file = std::fs::read(&bundle).unwrap();
    let records = crate::audit::records(&file);
    let rebuild = |records: Vec<Record>| {
        let mut out = coffer_audit::bundle::Writer::new(Vec::new()).unwrap();
        for record in records {
            out.write(&pb::BundleRecord {
                record: Some(record),
            })
            .unwrap();
        }
        out.finish().unwrap()
    };
    let two_entries = rebuild(records[..3].to_vec());
    let three_entries = rebuild(records[..4].to_vec());
    let inside_the_third = three_entries[..(two_entries.len() + three_entries.len()) / 2].to_vec();
    let mut rewritten = records.clone();
    let Record::Entry(entry) = &mut rewritten[2] else {
        panic!("records[2] is entry 2")
    };
    let mut leaf = pb::AuditEntry::decode(entry.leaf.as_slice()).unwrap();
    leaf.event.as_mut().unwrap().event_type = "NothingHappened".into();
    entry.leaf = leaf.encode_to_vec();
    let rewritten = rebuild(rewritten);

    let write = |name: &str, content: &[u8]| {
        let p = path(name);
        std::fs::write(&p, content).unwrap();
        p
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![write("two-entries", &two_entries)],
            "the bundle is truncated: it ends after 2 entries, before its trailer".into(),
        ),
        (
            vec![write("inside-an-entry", &inside_the_third)],
            "the bundle is truncated: the last record stops after".into(),
        ),
        (
            vec![write("garbage", b"\x00\xffnot a bundle at all")],
            "not a valid bundle: the file does not start with the line \"coffer-audit-bundle-v1\""
                .into(),
        ),
        (
            vec![write("empty", b"")],
            "not a valid bundle: the file does not start with the line \"coffer-audit-bundle-v1\""
                .into(),
        ),
        (
            vec![write("rewritten", &rewritten)],
            "the hash chain breaks at entry 2".into(),
        ),
        (
            vec![theirs.clone(), "--org".into(), acme.org.to_string()],
            format!(
                "the bundle is the log of org {}, not of org {}",
                other.org, acme.org
            ),
        ),
        (
            vec![bundle.clone(), "--witness".into(), their_witness.clone()],
            format!(
                "inconsistent with the witnessed checkpoint: the witness checkpoint does not \
                 verify with {our_key}"
            ),
        ),
        (
            vec![bundle.clone(), "--key".into(), their_key.to_owned()],
            format!(
                "signature check failed: the bundle is signed by {our_key}, not by the expected \
                 key {their_key}"
            ),
        ),
        (vec![path("no-such-file")], "cannot open".into()),
    ];
    for (args, says) in cases {
        let mut argv = vec!["audit", "verify"];
        argv.extend(args.iter().map(String::as_str));
        let out = coffer_offline(&argv).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{argv:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{argv:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{argv:?}: one line, got {stderr}");
        assert!(
            lines[0].starts_with("audit verify: FAILED: ") && lines[0].contains(&says),
            "{argv:?}: expected {says:?} in {stderr}"
        );
    }

    // The untouched bundle verifies, pinned to its own key and org.
    let out = coffer_offline(&[
        "audit",
        "verify",
        &bundle,
        "--key",
        &our_key,
        "--org",
        &acme.org.to_string(),
    ])
    .await;
    assert!(stdout(&out).starts_with("verified "));
}

#[tokio::test]
async fn the_cli_registers_a_database_schedules_it_and_runs_lists_and_cancels_its_jobs() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let agent = crate::scheduling::enrolled_agent(&app, &acme).await;
    let key = acme.owner_key.as_str();
    let vault_ref = format!("vault:coffer/{}/{}", acme.org, uuid::Uuid::now_v7());

    // Databases.
    let registered = json(
        &app,
        key,
        &[
            "database",
            "register",
            "orders",
            "--host",
            "db1.internal.example",
            "--database",
            "orders",
            "--user",
            "backup",
            "--password-ref",
            &vault_ref,
            "--agent",
            &agent,
        ],
    )
    .await;
    assert_eq!(registered["engine"], "postgresql");
    assert_eq!(registered["port"], 5432);
    assert_eq!(registered["agent_id"], agent.as_str());
    let database = registered["database_id"].as_str().unwrap().to_owned();
    let changed = json(
        &app,
        key,
        &["database", "change", &database, "--port", "6432"],
    )
    .await;
    assert_eq!(
        (&changed["port"], &changed["version"], &changed["name"]),
        (&Value::from(6432), &Value::from(2), &Value::from("orders")),
        "only the port changed"
    );
    assert_eq!(changed["password_vault_ref"], vault_ref.as_str());
    let table = stdout(&coffer(&app, key, &["database", "list"]).await);
    assert!(table.starts_with("DATABASE ID"), "{table}");
    assert!(
        table.contains(&database) && table.contains("db1.internal.example:6432"),
        "{table}"
    );
    assert_eq!(
        json(&app, key, &["database", "get", &database]).await,
        changed
    );

    // Schedules, to a local destination.
    let (destination, _) = app.local_destination(&acme).await;
    let created = json(
        &app,
        key,
        &[
            "schedule",
            "create",
            "yearly",
            "--database",
            &database,
            "--destination",
            &destination,
            "--cron",
            "30 2 1 1 *",
            "--timezone",
            "Europe/Berlin",
            "--jitter",
            "5m",
            "--missed-runs",
            "skip",
            "--keep-last",
            "3",
            "--keep-daily",
            "7",
            "--max-attempts",
            "2",
        ],
    )
    .await;
    assert_eq!(created["cron"], "30 2 1 1 *");
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["jitter_seconds"], 300);
    assert_eq!(created["missed_runs"], "skip");
    assert_eq!(created["retention"]["keep_last"], 3);
    assert_eq!(created["retention"]["daily"], 7);
    assert_eq!(created["retention"]["weekly"], 0);
    assert_eq!(created["max_attempts"], 2);
    assert_eq!(created["database_id"], database.as_str());
    assert_eq!(created["destination_id"], destination.as_str());
    assert_eq!(created["paused"], false);
    assert!(created["next_due_at"].is_string(), "{created}");
    let schedule = created["schedule_id"].as_str().unwrap().to_owned();

    let changed = json(
        &app,
        key,
        &[
            "schedule",
            "change",
            &schedule,
            "--cron",
            "0 4 1 1 *",
            "--jitter",
            "30",
            "--keep-weekly",
            "4",
        ],
    )
    .await;
    assert_eq!(changed["cron"], "0 4 1 1 *");
    assert_eq!(changed["jitter_seconds"], 30);
    assert_eq!(changed["version"], 2);
    assert_eq!(
        (&changed["timezone"], &changed["missed_runs"]),
        (&created["timezone"], &created["missed_runs"]),
        "the rest stays"
    );
    assert_eq!(changed["retention"]["keep_last"], 3);
    assert_eq!(changed["retention"]["weekly"], 4);

    let paused = json(&app, key, &["schedule", "pause", &schedule]).await;
    assert_eq!(paused["paused"], true);
    assert!(paused["next_due_at"].is_null(), "{paused}");
    let table = stdout(&coffer(&app, key, &["schedule", "list"]).await);
    assert!(table.contains("paused"), "{table}");
    let resumed = json(&app, key, &["schedule", "resume", &schedule]).await;
    assert_eq!(resumed["paused"], false);
    let table = stdout(&coffer(&app, key, &["schedule", "list"]).await);
    for expected in [
        schedule.as_str(),
        "yearly",
        "0 4 1 1 *",
        "Europe/Berlin",
        "active",
        "last 3, daily 7, weekly 4",
    ] {
        assert!(table.contains(expected), "{expected} in {table}");
    }
    assert_eq!(
        json(&app, key, &["schedule", "get", &schedule]).await,
        resumed
    );

    // Jobs.
    let first = json(&app, key, &["job", "run-now", &schedule]).await;
    assert_eq!(
        (&first["state"], &first["kind"], &first["trigger"]),
        (
            &Value::from("pending"),
            &Value::from("backup"),
            &Value::from("manual")
        )
    );
    assert_eq!(first["schedule_id"], schedule.as_str());
    assert_eq!(first["agent_id"], agent.as_str());
    let first_id = first["job_id"].as_str().unwrap().to_owned();
    let second = json(&app, key, &["job", "run-now", &schedule]).await;

    let page = json(
        &app,
        key,
        &["job", "list", "--schedule", &schedule, "--limit", "1"],
    )
    .await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["job_id"], second["job_id"], "newest first");
    let token = page["next_page_token"].as_str().expect("a next page");
    let rest = json(
        &app,
        key,
        &[
            "job",
            "list",
            "--schedule",
            &schedule,
            "--limit",
            "1",
            "--page-token",
            token,
        ],
    )
    .await;
    assert_eq!(rest["jobs"][0]["job_id"], first_id.as_str());
    let table = stdout(&coffer(&app, key, &["job", "list", "--limit", "1"]).await);
    assert!(
        table.contains("next page: --page-token"),
        "the table says how to continue: {table}"
    );
    let out = coffer(
        &app,
        key,
        &["job", "restore", &first_id, "--database", &database],
    )
    .await;
    assert_eq!(
        failure_line(&out),
        "coffer: start restore: failed precondition: backup_job_id must name a succeeded backup \
         job",
        "only a succeeded backup restores"
    );
    let detail = stdout(&coffer(&app, key, &["job", "get", &first_id]).await);
    assert!(
        detail.contains("pending") && detail.contains(&schedule),
        "{detail}"
    );

    let cancelled = json(
        &app,
        key,
        &["job", "cancel", &first_id, "--reason", "not needed"],
    )
    .await;
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["reason"], "not needed");
    assert!(cancelled["finished_at"].is_string(), "{cancelled}");
    let listed = json(&app, key, &["job", "list", "--state", "cancelled"]).await;
    let listed = listed["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["job_id"], first_id.as_str());
    let out = coffer(&app, key, &["job", "cancel", &first_id]).await;
    assert_eq!(
        failure_line(&out),
        "coffer: cancel job: failed precondition: job is cancelled"
    );

    // Bad input: refused by the server naming the field, or by the CLI naming the flag.
    let create = |cron: &'static str, zone: &'static str| {
        let (database, destination) = (database.clone(), destination.clone());
        let app = &app;
        async move {
            coffer(
                app,
                key,
                &[
                    "schedule",
                    "create",
                    "bad",
                    "--database",
                    &database,
                    "--destination",
                    &destination,
                    "--cron",
                    cron,
                    "--timezone",
                    zone,
                ],
            )
            .await
        }
    };
    let line = failure_line(&create("61 * * * *", "UTC").await);
    assert!(
        line.starts_with("coffer: create schedule: invalid argument: cron "),
        "{line}"
    );
    let line = failure_line(&create("0 3 * * *", "Mars/Base").await);
    assert!(
        line.starts_with("coffer: create schedule: invalid argument: timezone "),
        "{line}"
    );
    for (flag, value) in [("--missed-runs", "sometimes"), ("--jitter", "soon")] {
        let out = coffer(&app, key, &["schedule", "change", &schedule, flag, value]).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
    let out = coffer(&app, key, &["job", "list", "--state", "stuck"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("job state must be one of pending, claimed, running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schedules = json(&app, key, &["schedule", "list"]).await;
    assert_eq!(schedules.as_array().unwrap().len(), 1, "nothing saved");
    assert_eq!(schedules[0]["version"], resumed["version"]);

    // Delete and remove.
    let deleted = json(
        &app,
        key,
        &["schedule", "delete", &schedule, "--reason", "replaced"],
    )
    .await;
    assert_eq!(deleted["deleted"], true);
    let line = failure_line(&coffer(&app, key, &["schedule", "get", &schedule]).await);
    assert!(
        line.starts_with("coffer: get schedule: not found: "),
        "{line}"
    );
    let removed = json(&app, key, &["database", "remove", &database]).await;
    assert_eq!(removed["removed"], true);
    assert_eq!(
        json(&app, key, &["database", "list"]).await,
        Value::Array(vec![])
    );
}

#[tokio::test]
async fn the_cli_registers_probes_changes_lists_and_removes_destinations() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let key = acme.owner_key.as_str();
    let dir = app.local_root().join(coffer_testkit::unique("nas-"));
    std::fs::create_dir(&dir).unwrap();
    let path = dir.to_str().unwrap();
    let bucket = crate::destinations::create_bucket().await;
    let access_key = crate::destinations::storage_key(&app, &acme).await;
    let endpoint = coffer_testkit::kms_endpoint();

    let nas = json(
        &app,
        key,
        &[
            "destination",
            "register-local",
            "--name",
            "nas",
            "--path",
            path,
        ],
    )
    .await;
    assert_eq!(
        (&nas["kind"], &nas["path"], &nas["version"]),
        (&Value::from("local"), &Value::from(path), &Value::from(1))
    );
    assert_eq!(nas["org_id"], acme.org.to_string());
    let nas_id = nas["destination_id"].as_str().unwrap().to_owned();
    let offsite = json(
        &app,
        key,
        &[
            "destination",
            "register-s3",
            "--name",
            "offsite",
            "--endpoint",
            &endpoint,
            "--region",
            "us-east-1",
            "--bucket",
            &bucket,
            "--prefix",
            "acme",
            "--path-style",
            "--access-key-ref",
            &access_key,
        ],
    )
    .await;
    assert_eq!(offsite["kind"], "s3");
    assert_eq!(offsite["prefix"], "acme/", "a trailing / is added");
    assert_eq!(offsite["path_style"], true);
    assert_eq!(offsite["access_key_vault_ref"], access_key.as_str());
    let offsite_id = offsite["destination_id"].as_str().unwrap().to_owned();

    // Change: only what is given changes.
    let changed = json(
        &app,
        key,
        &["destination", "change", &offsite_id, "--prefix", "acme/v2"],
    )
    .await;
    assert_eq!(
        (&changed["prefix"], &changed["version"]),
        (&Value::from("acme/v2/"), &Value::from(2))
    );
    for field in [
        "name",
        "endpoint",
        "region",
        "bucket",
        "path_style",
        "created_at",
    ] {
        assert_eq!(changed[field], offsite[field], "{field} stays");
    }
    let renamed = json(
        &app,
        key,
        &["destination", "change", &nas_id, "--name", "nas-primary"],
    )
    .await;
    assert_eq!(
        (&renamed["name"], &renamed["path"], &renamed["version"]),
        (
            &Value::from("nas-primary"),
            &Value::from(path),
            &Value::from(2)
        )
    );
    assert_eq!(
        json(&app, key, &["destination", "get", &nas_id]).await,
        renamed
    );
    let listed = json(&app, key, &["destination", "list"]).await;
    assert_eq!(
        listed,
        Value::Array(vec![renamed.clone(), changed.clone()]),
        "by name"
    );
    let table = stdout(&coffer(&app, key, &["destination", "list"]).await);
    assert!(table.starts_with("DESTINATION ID"), "{table}");
    for expected in [
        nas_id.as_str(),
        "nas-primary",
        path,
        &offsite_id,
        &format!("s3://{bucket}/acme/v2/"),
        &format!("{endpoint}/ (path-style)"),
        "us-east-1",
        &access_key,
    ] {
        assert!(table.contains(expected), "{expected} in {table}");
    }

    // Probe: a pass shows the destination; a failure is one line naming the step.
    let probed = json(&app, key, &["destination", "probe", &nas_id]).await;
    assert_eq!(probed["passed"], true);
    assert_eq!(probed["destination"], renamed);
    let text = stdout(&coffer(&app, key, &["destination", "probe", &offsite_id]).await);
    assert!(text.starts_with("probe passed: "), "{text}");
    assert!(text.contains(&offsite_id), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
    let line = failure_line(&coffer(&app, key, &["destination", "probe", &nas_id]).await);
    assert!(
        line.starts_with("coffer: probe destination: failed precondition: probe failed at list: "),
        "{line}"
    );

    // Refused by the server naming the field, or by the CLI naming the flags.
    let outside = coffer(
        &app,
        key,
        &[
            "destination",
            "register-local",
            "--name",
            "etc",
            "--path",
            "/etc",
        ],
    )
    .await;
    let line = failure_line(&outside);
    assert!(
        line.starts_with(
            "coffer: register destination: invalid argument: path must lie under one of the \
             deployment's local roots"
        ),
        "{line}"
    );
    let line = failure_line(
        &coffer(
            &app,
            key,
            &["destination", "change", &nas_id, "--bucket", &bucket],
        )
        .await,
    );
    assert_eq!(
        line,
        "coffer: a local destination becomes an S3 one only with all of --endpoint, --region, \
         --bucket and --access-key-ref"
    );
    let out = coffer(
        &app,
        key,
        &[
            "destination",
            "change",
            &offsite_id,
            "--path",
            path,
            "--bucket",
            &bucket,
        ],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    assert_eq!(
        json(&app, key, &["destination", "list"]).await,
        listed,
        "nothing changed"
    );

    // A local destination becomes an S3 one (prefix and path-style take their defaults
    // unless given), keeping its id.
    let moved = json(
        &app,
        key,
        &[
            "destination",
            "change",
            &nas_id,
            "--endpoint",
            &endpoint,
            "--region",
            "us-east-1",
            "--bucket",
            &bucket,
            "--path-style",
            "true",
            "--access-key-ref",
            &access_key,
        ],
    )
    .await;
    assert_eq!(
        (&moved["kind"], &moved["prefix"], &moved["path_style"]),
        (&Value::from("s3"), &Value::from(""), &Value::from(true))
    );
    assert!(moved.get("path").is_none(), "{moved}");
    assert_eq!(moved["destination_id"], nas_id.as_str());

    // Remove.
    let removed = json(
        &app,
        key,
        &["destination", "remove", &nas_id, "--reason", "moved"],
    )
    .await;
    assert_eq!(removed["removed"], true);
    let text = stdout(&coffer(&app, key, &["destination", "remove", &offsite_id]).await);
    assert_eq!(
        text,
        format!("removed destination {offsite_id} from org {}\n", acme.org)
    );
    let line = failure_line(&coffer(&app, key, &["destination", "get", &nas_id]).await);
    assert!(
        line.starts_with("coffer: get destination: not found: "),
        "{line}"
    );
    assert_eq!(
        json(&app, key, &["destination", "list"]).await,
        Value::Array(vec![])
    );
}

/// Runs `coffer <args>` like [`coffer`] against a TLS `app`, trusting its certificate (the file
/// `ca`) the way a user would: through `SSL_CERT_FILE`, which the system roots include.
async fn coffer_trusting(
    app: &TestApp,
    ca: &std::path::Path,
    api_key: &str,
    args: &[&str],
) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env("COFFER_SERVER", app.url())
        .env("COFFER_API_KEY", api_key)
        .env("SSL_CERT_FILE", ca)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run coffer")
}

fn parsed(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).expect("stdout is one JSON document")
}

#[tokio::test]
async fn the_cli_follows_a_backup_an_agent_runs_to_success_and_restores_it() {
    use coffer_proto::scheduling::v1 as pb;

    // Agents need mTLS, so the server speaks TLS; the CLI trusts its certificate.
    let app = crate::helpers::spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("server.pem");
    std::fs::write(&ca, app.tls_ca.as_deref().unwrap()).unwrap();
    let key = acme.owner_key.as_str();
    let (agent_id, mut agent) = crate::jobs::agent(&app, &acme).await;
    let vault_ref = format!("vault:coffer/{}/{}", acme.org, uuid::Uuid::now_v7());

    let database = parsed(
        &coffer_trusting(
            &app,
            &ca,
            key,
            &[
                "database",
                "register",
                "orders",
                "--host",
                "10.0.0.7",
                "--database",
                "orders",
                "--user",
                "backup",
                "--password-ref",
                &vault_ref,
                "--agent",
                &agent_id,
                "--json",
            ],
        )
        .await,
    );
    let database_id = database["database_id"].as_str().unwrap().to_owned();
    let schedule = parsed(
        &coffer_trusting(
            &app,
            &ca,
            key,
            &[
                "schedule",
                "create",
                "yearly",
                "--database",
                &database_id,
                "--destination",
                &app.local_destination(&acme).await.0,
                "--cron",
                "30 2 1 1 *",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(schedule["timezone"], "UTC", "the default zone");
    let schedule_id = schedule["schedule_id"].as_str().unwrap().to_owned();
    let job =
        parsed(&coffer_trusting(&app, &ca, key, &["job", "run-now", &schedule_id, "--json"]).await);
    let job_id = job["job_id"].as_str().unwrap().to_owned();

    // The agent claims it, reports progress, and completes it with its artifact.
    let claimed = agent
        .poll_jobs(pb::PollJobsRequest { wait_seconds: 10 })
        .await
        .unwrap()
        .into_inner()
        .claimed
        .expect("the job within the poll");
    assert_eq!(claimed.job.as_ref().unwrap().job_id, job_id);
    agent
        .heartbeat(pb::HeartbeatRequest {
            job_id: job_id.clone(),
            fencing_token: claimed.fencing_token,
            progress: Some(pb::Progress {
                bytes_read: 1000,
                bytes_written: 400,
                bytes_per_second: 200,
            }),
        })
        .await
        .unwrap();
    let running =
        parsed(&coffer_trusting(&app, &ca, key, &["job", "get", &job_id, "--json"]).await);
    assert_eq!(running["state"], "running");
    assert_eq!(running["progress"]["bytes_written"], 400);
    let table = stdout(&coffer_trusting(&app, &ca, key, &["job", "get", &job_id]).await);
    assert!(
        table.contains("1000 bytes read, 400 written, 200 bytes/s"),
        "{table}"
    );
    let artifact = crate::jobs::artifact(&claimed);
    agent
        .complete_job(pb::CompleteJobRequest {
            job_id: job_id.clone(),
            fencing_token: claimed.fencing_token,
            artifact: Some(artifact.clone()),
        })
        .await
        .unwrap();
    let done = parsed(&coffer_trusting(&app, &ca, key, &["job", "get", &job_id, "--json"]).await);
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["artifact"]["object_key"], artifact.object_key.as_str());
    assert_eq!(done["artifact"]["sha256"], artifact.sha256.as_str());
    assert_eq!(done["artifact"]["size_bytes"], artifact.size_bytes);
    assert!(done["finished_at"].is_string(), "{done}");
    let table = stdout(&coffer_trusting(&app, &ca, key, &["job", "get", &job_id]).await);
    assert!(
        table.contains(&artifact.object_key) && table.contains(&artifact.sha256),
        "{table}"
    );
    let out = coffer_trusting(&app, &ca, key, &["job", "cancel", &job_id]).await;
    assert_eq!(
        failure_line(&out),
        "coffer: cancel job: failed precondition: job is succeeded"
    );

    // Its restore: a pending restore job into the backup's own database.
    let restore =
        parsed(&coffer_trusting(&app, &ca, key, &["job", "restore", &job_id, "--json"]).await);
    assert_eq!(restore["kind"], "restore");
    assert_eq!(restore["trigger"], "manual");
    assert_eq!(restore["state"], "pending");
    assert_eq!(restore["restore_of"], job_id.as_str());
    assert_eq!(restore["database_id"], database_id.as_str());
    assert!(restore["schedule_id"].is_null(), "{restore}");
    let listed = parsed(
        &coffer_trusting(
            &app,
            &ca,
            key,
            &["job", "list", "--state", "succeeded", "--json"],
        )
        .await,
    );
    let listed = listed["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["job_id"], job_id.as_str());
}
