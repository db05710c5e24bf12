//! Printing certificate statuses, from the API's JSON shape (offline and online alike).

use serde_json::Value;

/// `puppetserver ca list`-style text, or the JSON array.
pub(super) fn print_statuses(statuses: &[Value], json: bool) {
    if json {
        println!("{}", Value::Array(statuses.to_vec()));
        return;
    }
    if statuses.is_empty() {
        println!("No certificates to list");
        return;
    }
    for (state, heading) in [
        ("requested", "Requested Certificates:"),
        ("signed", "Signed Certificates:"),
        ("revoked", "Revoked Certificates:"),
    ] {
        let group: Vec<&Value> = statuses.iter().filter(|s| s["state"] == state).collect();
        if group.is_empty() {
            continue;
        }
        println!("{heading}");
        let width =
            group.iter().map(|s| s["name"].as_str().unwrap_or_default().len()).max().unwrap_or(0);
        for status in group {
            println!("    {}", line(status, width));
        }
    }
}

fn line(status: &Value, width: usize) -> String {
    let name = status["name"].as_str().unwrap_or_default();
    let fingerprint = status["fingerprint"].as_str().unwrap_or_default();
    let mut out = format!("{name:<width$}  (SHA256)  {fingerprint}");
    let alt: Vec<&str> = status["subject_alt_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !alt.is_empty() && alt != [format!("DNS:{name}").as_str()] {
        out.push_str(&format!("\talt names: [\"{}\"]", alt.join("\", \"")));
    }
    if let Some(exts) = status["authorization_extensions"].as_object().filter(|m| !m.is_empty()) {
        let listed: Vec<String> =
            exts.iter().map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default())).collect();
        out.push_str(&format!("\tauthorization extensions: [{}]", listed.join(", ")));
    }
    out
}
