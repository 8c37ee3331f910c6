//! Links: `link put`, `link del`, `link get` (also `get links`).

use serde_json::json;
use trellis_lattice::ctl::{DeleteLinkRequest, Link};

use crate::cli::{Global, LinkDelArgs, LinkPutArgs};
use crate::lattice;
use crate::output::{Report, list, table};

/// `ns:pkg/a,b`
fn interfaces(l: &Link) -> String {
    format!("{}:{}/{}", l.wit_namespace, l.wit_package, l.interfaces.join(","))
}

/// `wash link put`.
pub async fn put(g: &Global, args: &LinkPutArgs) -> anyhow::Result<Report> {
    for (what, v) in [("source id", &args.source_id), ("target", &args.target), ("link name", &args.link_name)] {
        trellis_lattice::validate_id(what, v)?;
    }
    let link = Link {
        source_id: args.source_id.clone(),
        target: args.target.clone(),
        name: args.link_name.clone(),
        wit_namespace: args.wit_namespace.clone(),
        wit_package: args.wit_package.clone(),
        interfaces: args.interfaces.clone(),
        source_config: args.source_config.clone(),
        target_config: args.target_config.clone(),
    };
    let ctl = lattice::ctl(g).await?;
    ctl.put_link(&link).await?;
    let text = format!("Linked {} -> {} for {} (link name `{}`)", link.source_id, link.target, interfaces(&link), link.name);
    Ok(Report::new(text, json!({"link": link})))
}

/// `wash link del`.
pub async fn del(g: &Global, args: &LinkDelArgs) -> anyhow::Result<Report> {
    let req = DeleteLinkRequest {
        source_id: args.source_id.clone(),
        name: args.link_name.clone(),
        wit_namespace: args.wit_namespace.clone(),
        wit_package: args.wit_package.clone(),
    };
    let ctl = lattice::ctl(g).await?;
    let matching = |l: &Link| l.source_id == req.source_id && l.name == req.name && l.wit_namespace == req.wit_namespace && l.wit_package == req.wit_package;
    let doomed: Vec<Link> = ctl.get_links().await?.into_iter().filter(|l| matching(l)).collect();
    ctl.delete_link(&req).await?;
    let what = format!("{}:{} from `{}` (link name `{}`)", req.wit_namespace, req.wit_package, req.source_id, req.name);
    let text = if doomed.is_empty() { format!("No link for {what}; nothing deleted") } else { format!("Deleted {} link(s) for {what}", doomed.len()) };
    Ok(Report::new(text, json!({"deleted": doomed})))
}

/// `wash link get` / `wash get links`.
pub async fn get(g: &Global) -> anyhow::Result<Report> {
    let ctl = lattice::ctl(g).await?;
    let listing = ctl.get_links_listing().await?;
    let mut links = listing.links;
    links.sort();
    let rows: Vec<Vec<String>> = links
        .iter()
        .map(|l| vec![l.source_id.clone(), l.target.clone(), interfaces(l), l.name.clone(), list(&l.source_config), list(&l.target_config)])
        .collect();
    let mut text = table(&["SOURCE", "TARGET", "INTERFACES", "NAME", "SOURCE CONFIG", "TARGET CONFIG"], &rows);
    if !listing.unreadable.is_empty() {
        text.push_str(&format!(
            "\n{} link entries in the registry cannot be read; hosts do not route by them (put the link again, or delete it with `wash link del`):\n",
            listing.unreadable.len()
        ));
        for u in &listing.unreadable {
            text.push_str(&format!("  {}: {}\n", u.key.escape_debug(), u.error.escape_debug()));
        }
    }
    Ok(Report::new(text, json!({"links": links, "unreadable": listing.unreadable})))
}
