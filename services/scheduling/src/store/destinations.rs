//! The `destinations` projection (kept in the append transaction) and its queries.

use chrono::{DateTime, Utc};
use coffer_eventstore::{Aggregate, Projection, ProjectionError, RecordedEvent};
use coffer_types::{OrgId, VaultRef};
use sqlx::{PgConnection, Row};

use crate::domain::destination::{Destination, DestinationEvent, DestinationSpec, Kind, S3Spec};

/// `destinations`, from the Destination aggregate: the org's live destinations.
pub(crate) struct Destinations;

/// The kind-specific columns of a spec, in the table's order.
struct Columns {
    kind: &'static str,
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    path_style: Option<bool>,
    access_key_vault_ref: Option<String>,
    path: Option<String>,
}

fn columns(spec: &DestinationSpec) -> Columns {
    match &spec.kind {
        Kind::S3(s3) => Columns {
            kind: "s3",
            endpoint: Some(s3.endpoint.to_string()),
            region: Some(s3.region.clone()),
            bucket: Some(s3.bucket.clone()),
            prefix: Some(s3.prefix.clone()),
            path_style: Some(s3.path_style),
            access_key_vault_ref: Some(s3.access_key_vault_ref.to_string()),
            path: None,
        },
        Kind::Local { path } => Columns {
            kind: "local",
            endpoint: None,
            region: None,
            bucket: None,
            prefix: None,
            path_style: None,
            access_key_vault_ref: None,
            path: Some(path.to_string_lossy().into_owned()),
        },
    }
}

#[async_trait::async_trait]
impl Projection for Destinations {
    fn name(&self) -> &'static str {
        "destinations"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["destinations"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Destination::TYPE {
            return Ok(());
        }
        let id = event.aggregate_id.as_uuid();
        match event.decode::<DestinationEvent>()? {
            DestinationEvent::DestinationRegistered(spec) => {
                let c = columns(&spec);
                sqlx::query(
                    "INSERT INTO destinations \
                     (org_id, destination_id, name, kind, endpoint, region, bucket, prefix, \
                      path_style, access_key_vault_ref, path, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12)",
                )
                .bind(event.org_id.as_uuid())
                .bind(id)
                .bind(&spec.name)
                .bind(c.kind)
                .bind(c.endpoint)
                .bind(c.region)
                .bind(c.bucket)
                .bind(c.prefix)
                .bind(c.path_style)
                .bind(c.access_key_vault_ref)
                .bind(c.path)
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
            DestinationEvent::DestinationChanged { version, spec } => {
                let c = columns(&spec);
                sqlx::query(
                    "UPDATE destinations SET name = $2, kind = $3, endpoint = $4, region = $5, \
                     bucket = $6, prefix = $7, path_style = $8, access_key_vault_ref = $9, \
                     path = $10, version = $11, updated_at = $12 WHERE destination_id = $1",
                )
                .bind(id)
                .bind(&spec.name)
                .bind(c.kind)
                .bind(c.endpoint)
                .bind(c.region)
                .bind(c.bucket)
                .bind(c.prefix)
                .bind(c.path_style)
                .bind(c.access_key_vault_ref)
                .bind(c.path)
                .bind(i32::try_from(version).unwrap_or(i32::MAX))
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
            DestinationEvent::DestinationRemoved { .. } => {
                sqlx::query("DELETE FROM destinations WHERE destination_id = $1")
                    .bind(id)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// A live destination, as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationView {
    /// The org.
    pub org_id: OrgId,
    /// The destination.
    pub destination_id: uuid::Uuid,
    /// Its current fields.
    pub spec: DestinationSpec,
    /// Its version.
    pub version: u32,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "org_id, destination_id, name, kind, endpoint, region, bucket, prefix, \
     path_style, access_key_vault_ref, path, version, created_at, updated_at";

fn decode_err(what: impl Into<String>) -> sqlx::Error {
    sqlx::Error::Decode(what.into().into())
}

fn destination_view(row: &sqlx::postgres::PgRow) -> Result<DestinationView, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let required = |column: &str| -> Result<String, sqlx::Error> {
        row.try_get::<Option<String>, _>(column)?
            .ok_or_else(|| decode_err(format!("destinations.{column} is null")))
    };
    let kind = match kind.as_str() {
        "s3" => Kind::S3(S3Spec {
            endpoint: required("endpoint")?
                .parse()
                .map_err(|e: url::ParseError| decode_err(e.to_string()))?,
            region: required("region")?,
            bucket: required("bucket")?,
            prefix: required("prefix")?,
            path_style: row
                .try_get::<Option<bool>, _>("path_style")?
                .ok_or_else(|| decode_err("destinations.path_style is null"))?,
            access_key_vault_ref: required("access_key_vault_ref")?
                .parse::<VaultRef>()
                .map_err(|e| decode_err(e.to_string()))?,
        }),
        "local" => Kind::Local {
            path: required("path")?.into(),
        },
        other => return Err(decode_err(format!("unknown destination kind {other}"))),
    };
    let version: i32 = row.try_get("version")?;
    Ok(DestinationView {
        org_id: OrgId::from(row.try_get::<uuid::Uuid, _>("org_id")?),
        destination_id: row.try_get("destination_id")?,
        spec: DestinationSpec {
            name: row.try_get("name")?,
            kind,
        },
        version: u32::try_from(version).map_err(|e| decode_err(e.to_string()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One live destination of the transaction's org.
pub(crate) async fn destination(
    conn: &mut PgConnection,
    id: uuid::Uuid,
) -> Result<Option<DestinationView>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM destinations WHERE destination_id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(destination_view)
    .transpose()
}

/// Every live destination of the transaction's org, by name.
pub(crate) async fn destinations(
    conn: &mut PgConnection,
) -> Result<Vec<DestinationView>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM destinations ORDER BY name"))
        .fetch_all(conn)
        .await?
        .iter()
        .map(destination_view)
        .collect()
}

/// Whether a live destination of the transaction's org other than `except` is called `name`
/// (the name stays locked until the transaction ends).
pub(crate) async fn name_taken(
    conn: &mut PgConnection,
    name: &str,
    except: uuid::Uuid,
) -> Result<bool, sqlx::Error> {
    super::lock_name(conn, "destination", name).await?;
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM destinations WHERE name = $1 AND destination_id <> $2)",
    )
    .bind(name)
    .bind(except)
    .fetch_one(conn)
    .await
}
