//! The CA commands through a running crossbar, with an admin certificate.

use anyhow::{bail, Context};
use http::{Method, StatusCode};
use pki::Certname;
use serde_json::{json, Value};

use super::{output, EXIT_NOTHING_TO_SIGN};
use crate::client::AdminClient;

const API: &str = "/puppet-ca/v1";

pub(super) async fn list(client: &AdminClient, all: bool, json: bool) -> anyhow::Result<u8> {
    let statuses = statuses(client, if all { None } else { Some("requested") }).await?;
    output::print_statuses(&statuses, json);
    Ok(0)
}

async fn statuses(client: &AdminClient, state: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let path = match state {
        Some(state) => format!("{API}/certificate_statuses/any_key?state={state}"),
        None => format!("{API}/certificate_statuses/any_key"),
    };
    let (status, body) = client.request(Method::GET, &path, None).await?;
    expect(status, &[StatusCode::OK], &body, "list certificates")?;
    let value: Value =
        serde_json::from_slice(&body).context("the server's certificate list is not JSON")?;
    Ok(value.as_array().cloned().unwrap_or_default())
}

pub(super) async fn sign(
    client: &AdminClient,
    names: &[Certname],
    all: bool,
) -> anyhow::Result<u8> {
    let names: Vec<String> = if all {
        statuses(client, Some("requested"))
            .await?
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect()
    } else {
        names.iter().map(ToString::to_string).collect()
    };
    if names.is_empty() {
        println!("No waiting certificate requests to sign");
        return Ok(EXIT_NOTHING_TO_SIGN);
    }
    let mut failed = false;
    for name in &names {
        match set_state(client, name, "signed").await {
            Ok(()) => println!("Successfully signed certificate request for {name}"),
            Err(e) => {
                eprintln!("Could not sign {name}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

pub(super) async fn revoke(client: &AdminClient, names: &[Certname]) -> anyhow::Result<u8> {
    for name in names {
        set_state(client, name.as_str(), "revoked")
            .await
            .with_context(|| format!("could not revoke {name}"))?;
        println!("Certificate for {name} has been revoked");
    }
    Ok(0)
}

pub(super) async fn clean(client: &AdminClient, names: &[Certname]) -> anyhow::Result<u8> {
    let body = json!({ "certnames": names.iter().map(Certname::as_str).collect::<Vec<_>>() });
    let (status, response) =
        client.request(Method::PUT, &format!("{API}/clean"), Some(body)).await?;
    expect(status, &[StatusCode::OK], &response, "clean")?;
    let message = String::from_utf8_lossy(&response);
    println!("{message}");
    Ok(u8::from(message.contains("do not exist")))
}

async fn set_state(client: &AdminClient, name: &str, state: &str) -> anyhow::Result<()> {
    let path = format!("{API}/certificate_status/{name}");
    let (status, body) =
        client.request(Method::PUT, &path, Some(json!({ "desired_state": state }))).await?;
    expect(status, &[StatusCode::NO_CONTENT, StatusCode::OK], &body, state)
}

fn expect(status: StatusCode, ok: &[StatusCode], body: &[u8], what: &str) -> anyhow::Result<()> {
    if ok.contains(&status) {
        return Ok(());
    }
    bail!("{what}: the server answered {status}: {}", String::from_utf8_lossy(body).trim())
}
