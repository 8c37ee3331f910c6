//! Named config: `config put`, `config get`, `config del`.

use serde_json::json;
use trellis_lattice::ErrorKind;
use trellis_lattice::ctl::StringMap;

use crate::cli::Global;
use crate::lattice;
use crate::output::{Report, table};

/// `wash config put NAME k=v…` (replaces what was there).
pub async fn put(g: &Global, name: &str, values: Vec<(String, String)>) -> anyhow::Result<Report> {
    trellis_lattice::validate_id("config name", name)?;
    let values: StringMap = values.into_iter().collect();
    let ctl = lattice::ctl(g).await?;
    ctl.put_config(name, &values).await?;
    Ok(Report::new(format!("Config `{name}` put ({} key(s))", values.len()), json!({"config_name": name, "config": values})))
}

/// `wash config get NAME`.
pub async fn get(g: &Global, name: &str) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    let values = ctl.get_config(name).await?;
    let rows: Vec<Vec<String>> = values.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
    Ok(Report::new(table(&["KEY", "VALUE"], &rows), json!({"config_name": name, "config": values})))
}

/// `wash config del NAME`: says whether there was anything to delete.
pub async fn del(g: &Global, name: &str) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    let existed = match ctl.get_config(name).await {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::Refused => false,
        Err(e) => return Err(e.into()),
    };
    ctl.delete_config(name).await?;
    let text = if existed { format!("Config `{name}` deleted") } else { format!("No config named `{name}`; nothing deleted") };
    Ok(Report::new(text, json!({"config_name": name, "existed": existed})))
}
