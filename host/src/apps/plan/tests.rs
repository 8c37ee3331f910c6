//! Table tests of the planner: one per placement and ordering rule.

use super::*;
use trellis_lattice::ctl::{ComponentDescription, ProviderDescription};

fn host(id: &str, zone: &str) -> HostInventory {
    HostInventory { host_id: id.into(), labels: [("zone".to_string(), zone.to_string())].into(), ..Default::default() }
}

fn with_schedule(mut h: HostInventory, s: Schedule) -> HostInventory {
    h.schedule = s;
    h
}

/// `h` running `id` from `image` with `n` replicas, managed by app `app`.
fn running(mut h: HostInventory, app: &str, id: &str, image: &str, n: u32) -> HostInventory {
    h.components.push(ComponentDescription {
        id: id.into(),
        image_ref: image.into(),
        max_instances: n,
        annotations: managed_annotations(app),
        ..Default::default()
    });
    h
}

/// `h` running provider `id`, managed by app `app`.
fn serving(mut h: HostInventory, app: &str, id: &str) -> HostInventory {
    h.providers.push(ProviderDescription { id: id.into(), annotations: managed_annotations(app), ..Default::default() });
    h
}

/// A manifest of app `name` with the given `spec.components` entries (YAML, indented by 4).
fn manifest(name: &str, components: &str) -> Manifest {
    let text = format!("apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: {name}\nspec:\n  components:\n{components}");
    Manifest::parse(&text).unwrap_or_else(|e| panic!("a valid manifest: {e}\n{text}"))
}

/// A component entry `name` (image file:///NAME.wasm) with `instances` replicas and `traits` (YAML).
fn component(name: &str, instances: u32, traits: &str) -> String {
    format!(
        "    - name: {name}\n      type: component\n      properties:\n        image: file:///{name}.wasm\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: {instances}\n{traits}"
    )
}

fn provider(name: &str, image: &str, traits: &str) -> String {
    format!(
        "    - name: {name}\n      type: capability\n      properties:\n        image: {image}\n{}",
        if traits.is_empty() { String::new() } else { format!("      traits:\n{traits}") }
    )
}

/// A link trait to `target` for `wasi:http/incoming-handler`, with source config `config`.
fn http_link_trait(target: &str, config: Option<(&str, &str)>) -> String {
    let source = match config {
        Some((name, value)) => format!(
            "            source:\n              config:\n                - name: {name}\n                  properties:\n                    address: \"{value}\"\n"
        ),
        None => String::new(),
    };
    format!(
        "        - type: link\n          properties:\n            namespace: wasi\n            package: http\n            interfaces: [incoming-handler]\n            target:\n              name: {target}\n{source}"
    )
}

fn deployed(name: &str, m: Manifest, since_ms: u64, owned: Owned) -> AppInput {
    AppInput {
        name: name.into(),
        deployment: Deployment { version: "v1".into(), manifest: String::new(), active: true, since_ms },
        manifest: Ok(m),
        owned,
        settled: false,
    }
}

fn undeployed(name: &str, m: Manifest, owned: Owned) -> AppInput {
    AppInput { deployment: Deployment { active: false, ..deployed(name, m.clone(), 0, Owned::default()).deployment }, ..deployed(name, m, 0, owned) }
}

fn link(source: &str, target: &str) -> Link {
    Link {
        source_id: source.into(),
        target: target.into(),
        name: trellis_lattice::ctl::DEFAULT_LINK_NAME.into(),
        wit_namespace: "wasi".into(),
        wit_package: "http".into(),
        interfaces: vec!["incoming-handler".into()],
        source_config: vec![],
        target_config: vec![],
    }
}

fn with_config(mut l: Link, name: &str) -> Link {
    l.source_config.push(name.into());
    l
}

fn owned(links: &[Link], configs: &[&str]) -> Owned {
    Owned { links: links.to_vec(), configs: configs.iter().map(|c| c.to_string()).collect() }
}

fn values(v: &str) -> StringMap {
    StringMap::from([("address".to_string(), v.to_string())])
}

/// The steps, one short line each.
fn steps(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| {
            let what = match &s.action {
                Action::PutConfig { name, .. } => format!("put config {name}"),
                Action::Scale(c) if c.max_instances == 0 => format!("stop {} on {}", c.component_id, c.host_id),
                Action::Scale(c) => format!("scale {} on {} to {} from {}", c.component_id, c.host_id, c.max_instances, c.component_ref),
                Action::StartProvider(c) => format!("start provider {} on {}", c.provider_id, c.host_id),
                Action::StopProvider(c) => format!("stop provider {} on {}", c.provider_id, c.host_id),
                Action::PutLink { link, replacing } if replacing.is_empty() => format!("put link {} -> {}", link.source_id, link.target),
                Action::PutLink { link, replacing } => format!("put link {} -> {} replacing -> {}", link.source_id, link.target, replacing[0].target),
                Action::DeleteLink(l) => format!("delete link {} -> {}", l.source_id, l.target),
                Action::DeleteConfig(n) => format!("delete config {n}"),
            };
            format!("{}: {what}", s.app)
        })
        .collect()
}

fn state(p: &Plan, app: &str) -> (AppState, String) {
    let a = p.apps.iter().find(|a| a.name == app).unwrap_or_else(|| panic!("a plan for {app}"));
    let s = a.status(&[], 0);
    (s.state, s.message)
}

/// A table row: what the case is, the hosts' inventories, one more input, the steps wanted.
type Case<'a, T> = (&'a str, Vec<HostInventory>, Vec<&'a str>, T);

fn placed(d: &Desired) -> Vec<(String, u32)> {
    d.components.iter().map(|((h, _), n)| (h.clone(), *n)).collect()
}

const SPREAD: &str = "        - type: spreadscaler\n          properties:\n            instances: 7\n            spread:\n              - name: a\n                requirements: {zone: cloud}\n                weight: 2\n              - name: b\n                requirements: {zone: edge}\n                weight: 1\n";

fn spread_app(kind: &str, image: &str, traits: &str) -> Manifest {
    let traits = if traits.is_empty() { String::new() } else { format!("      traits:\n{traits}") };
    manifest("t", &format!("    - name: c\n      type: {kind}\n      properties:\n        image: {image}\n{traits}"))
}

#[test]
fn spreads_follow_weights_and_fill_the_emptiest_host_first() {
    let hosts = [host("h1", "cloud"), host("h2", "cloud"), host("h3", "edge")];
    let d = desired(&spread_app("component", "file:///c.wasm", SPREAD), &hosts);
    // 7 × 2/3 = 4.67 → 5 on cloud (3 + 2), 2 on edge.
    assert_eq!(placed(&d), [("h1".into(), 3), ("h2".into(), 2), ("h3".into(), 2)]);
    assert!(d.problems.is_empty());
    let d = desired(&spread_app("component", "file:///c.wasm", SPREAD), &[host("h1", "cloud")]);
    assert_eq!(placed(&d), [("h1".into(), 5)]);
    assert_eq!(d.problems, ["5 of 7 replicas of `c`: no host matches zone=edge"]);
    // Ties go to the host already running the component.
    let hosts = [host("h1", "cloud"), running(host("h2", "cloud"), "t", "t-c", "file:///c.wasm", 1)];
    let one = "        - type: spreadscaler\n          properties:\n            instances: 1\n";
    assert_eq!(placed(&desired(&spread_app("component", "file:///c.wasm", one), &hosts)), [("h2".into(), 1)]);
    let none = desired(&spread_app("component", "file:///c.wasm", one), &[]);
    assert_eq!(none.problems, ["0 of 1 replicas of `c`: no host is running"]);
}

#[test]
fn a_cordoned_host_keeps_what_it_runs_and_a_draining_one_gets_nothing() {
    let six = "        - type: spreadscaler\n          properties:\n            instances: 6\n";
    let m = spread_app("component", "file:///c.wasm", six);
    let h1 = running(host("h1", "cloud"), "t", "t-c", "file:///c.wasm", 2);
    let cases: [(Schedule, &[(&str, u32)]); 4] = [
        (Schedule::Schedulable, &[("h1", 3), ("h2", 3)]),
        (Schedule::Cordoned, &[("h1", 2), ("h2", 4)]),
        (Schedule::Draining, &[("h2", 6)]),
        (Schedule::Drained, &[("h2", 6)]),
    ];
    for (schedule, want) in cases {
        let d = desired(&m, &[with_schedule(h1.clone(), schedule), host("h2", "cloud")]);
        let want: Vec<(String, u32)> = want.iter().map(|(h, n)| (h.to_string(), *n)).collect();
        assert_eq!(placed(&d), want, "{schedule:?}");
        assert!(d.problems.is_empty(), "{schedule:?}: {:?}", d.problems);
    }
    let d = desired(&m, &[with_schedule(h1, Schedule::Cordoned)]);
    assert_eq!(placed(&d), [("h1".into(), 2)]);
    assert_eq!(d.problems, ["2 of 6 replicas of `c`: every host matching it is cordoned"]);
}

#[test]
fn daemons_go_everywhere_and_providers_once_per_host() {
    let hosts = [host("h1", "cloud"), host("h2", "cloud"), host("h3", "edge")];
    let daemon = "        - type: daemonscaler\n          properties:\n            instances: 2\n            spread:\n              - name: a\n                requirements: {zone: cloud}\n";
    let d = desired(&spread_app("component", "file:///c.wasm", daemon), &hosts);
    assert_eq!(placed(&d), [("h1".into(), 2), ("h2".into(), 2)]);
    let d = desired(&spread_app("capability", "builtin://http-server", SPREAD), &hosts);
    let on: Vec<&str> = d.providers.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(on, ["h1", "h2", "h3"], "5 instances on 2 cloud hosts: once on each");
    let d = desired(&spread_app("capability", "builtin://http-server", ""), &hosts);
    assert_eq!(d.providers.len(), 1, "no scaler: one instance");
    let d = desired(&spread_app("capability", "builtin://http-server", daemon), &hosts);
    assert_eq!(d.providers.len(), 2, "a daemon provider: once on every eligible host");
}

#[test]
fn components_start_where_wanted_before_they_stop_where_not() {
    let m = manifest("a", &component("c", 2, ""));
    let img = "file:///c.wasm";
    let drain = |h: HostInventory| with_schedule(h, Schedule::Draining);
    let cases: Vec<Case<'_, AppState>> = vec![
        ("nothing runs", vec![host("h1", "x")], vec!["a: scale a-c on h1 to 2 from file:///c.wasm"], AppState::Reconciling),
        ("in place", vec![running(host("h1", "x"), "a", "a-c", img, 2)], vec![], AppState::Deployed),
        (
            "draining host, no replacement yet: start elsewhere, keep the old",
            vec![drain(running(host("h1", "x"), "a", "a-c", img, 2)), host("h2", "x")],
            vec!["a: scale a-c on h2 to 2 from file:///c.wasm"],
            AppState::Reconciling,
        ),
        (
            "replacement short of replicas: the old stays",
            vec![drain(running(host("h1", "x"), "a", "a-c", img, 2)), running(host("h2", "x"), "a", "a-c", img, 1)],
            vec!["a: scale a-c on h2 to 2 from file:///c.wasm"],
            AppState::Reconciling,
        ),
        (
            "replacement in place: the old stops",
            vec![drain(running(host("h1", "x"), "a", "a-c", img, 2)), running(host("h2", "x"), "a", "a-c", img, 2)],
            vec!["a: stop a-c on h1"],
            AppState::Reconciling,
        ),
        (
            "replacement on an old image: the old stays until the new image runs",
            vec![drain(running(host("h1", "x"), "a", "a-c", img, 2)), running(host("h2", "x"), "a", "a-c", "file:///old.wasm", 2)],
            vec!["a: scale a-c on h2 to 2 from file:///c.wasm"],
            AppState::Reconciling,
        ),
        (
            "someone else's replica is never touched",
            vec![running(running(host("h1", "x"), "other", "a-x", img, 1), "a", "a-c", img, 2)],
            vec![],
            AppState::Deployed,
        ),
    ];
    for (case, inventories, want, want_state) in cases {
        let p = plan(&[deployed("a", m.clone(), 1, Owned::default())], &Actual { inventories, ..Default::default() });
        assert_eq!(steps(&p), want, "{case}");
        assert_eq!(state(&p, "a").0, want_state, "{case}");
    }
    // The scale carries the app's annotations, the config names and allow_update.
    let p = plan(&[deployed("a", m, 1, Owned::default())], &Actual { inventories: vec![host("h1", "x")], ..Default::default() });
    let Action::Scale(cmd) = &p.steps[0].action else { panic!("a scale") };
    assert!(cmd.allow_update && cmd.annotations == Some(managed_annotations("a")));
}

#[test]
fn a_renamed_component_stops_once_the_new_one_runs_and_no_link_calls_it() {
    // v1 had `c` (a-c) behind the http server's link; v2 has `d` (a-d) instead.
    let v2 = manifest("a", &format!("{}{}", component("d", 1, ""), provider("web", "builtin://http-server", &http_link_trait("d", None))));
    let old = link("a-web", "a-c");
    let before = owned(std::slice::from_ref(&old), &[]);
    let base = |h: HostInventory| serving(running(h, "a", "a-c", "file:///c.wasm", 1), "a", "a-web");
    let cases: Vec<Case<'_, Vec<Link>>> = vec![
        ("the new one does not run yet", vec![base(host("h1", "x"))], vec!["a: scale a-d on h1 to 1 from file:///d.wasm"], vec![old.clone()]),
        (
            "it runs: the link moves, the old one is still called",
            vec![running(base(host("h1", "x")), "a", "a-d", "file:///d.wasm", 1)],
            vec!["a: put link a-web -> a-d replacing -> a-c"],
            vec![old.clone()],
        ),
        (
            "the link moved: the old one stops",
            vec![running(base(host("h1", "x")), "a", "a-d", "file:///d.wasm", 1)],
            vec!["a: stop a-c on h1"],
            vec![link("a-web", "a-d")],
        ),
    ];
    for (case, inventories, want, links) in cases {
        let p = plan(&[deployed("a", v2.clone(), 1, before.clone())], &Actual { inventories, links, ..Default::default() });
        assert_eq!(steps(&p), want, "{case}");
    }
}

#[test]
fn providers_start_where_wanted_before_they_stop_where_not() {
    let m = manifest("a", &provider("p", "builtin://keyvalue", ""));
    let drain = |h: HostInventory| with_schedule(h, Schedule::Draining);
    let cases: Vec<(&str, Vec<HostInventory>, Vec<&str>)> = vec![
        ("none runs", vec![host("h1", "x")], vec!["a: start provider a-p on h1"]),
        ("draining, no replacement", vec![drain(serving(host("h1", "x"), "a", "a-p")), host("h2", "x")], vec!["a: start provider a-p on h2"]),
        ("replacement runs", vec![drain(serving(host("h1", "x"), "a", "a-p")), serving(host("h2", "x"), "a", "a-p")], vec!["a: stop provider a-p on h1"]),
    ];
    for (case, inventories, want) in cases {
        let p = plan(&[deployed("a", m.clone(), 1, Owned::default())], &Actual { inventories, ..Default::default() });
        assert_eq!(steps(&p), want, "{case}");
    }
    // A provider the app no longer has at all stops at once (a renamed one may need its address).
    let renamed = manifest("a", &provider("q", "builtin://keyvalue", ""));
    let p = plan(&[deployed("a", renamed, 1, Owned::default())], &Actual { inventories: vec![serving(host("h1", "x"), "a", "a-p")], ..Default::default() });
    assert_eq!(steps(&p), ["a: stop provider a-p on h1", "a: start provider a-q on h1"]);
}

#[test]
fn config_goes_before_what_names_it_and_links_wait_for_their_replacements() {
    let m = manifest(
        "a",
        &format!("{}{}", component("c", 1, ""), provider("web", "builtin://http-server", &http_link_trait("c", Some(("a-addr", "127.0.0.1:1"))))),
    );
    let p = plan(&[deployed("a", m.clone(), 1, Owned::default())], &Actual { inventories: vec![host("h1", "x")], ..Default::default() });
    assert_eq!(
        steps(&p),
        ["a: put config a-addr", "a: scale a-c on h1 to 1 from file:///c.wasm", "a: start provider a-web on h1", "a: put link a-web -> a-c",]
    );
    assert_eq!(p.apps[0].owned, owned(&[with_config(link("a-web", "a-c"), "a-addr")], &["a-addr"]), "what it puts, it owns");
    // A link to a new target replaces the app's own old one only once everything runs.
    let before = owned(&[with_config(link("a-web", "a-old"), "a-addr")], &["a-addr"]);
    let actual = Actual {
        inventories: vec![host("h1", "x")],
        links: vec![with_config(link("a-web", "a-old"), "a-addr")],
        configs: [("a-addr".to_string(), values("127.0.0.1:1"))].into(),
        ..Default::default()
    };
    let p = plan(&[deployed("a", m.clone(), 1, before.clone())], &actual);
    assert_eq!(steps(&p), ["a: scale a-c on h1 to 1 from file:///c.wasm", "a: start provider a-web on h1"]);
    assert!(state(&p, "a").1.contains("once every component and provider is in place"), "{:?}", state(&p, "a"));
    let up = Actual { inventories: vec![serving(running(host("h1", "x"), "a", "a-c", "file:///c.wasm", 1), "a", "a-web")], ..actual };
    let p = plan(&[deployed("a", m, 1, before)], &up);
    assert_eq!(steps(&p), ["a: put link a-web -> a-c replacing -> a-old"]);
    assert_eq!(p.apps[0].owned.links, [with_config(link("a-web", "a-c"), "a-addr")]);
}

#[test]
fn apps_share_what_they_define_alike_and_the_first_keeps_what_they_define_otherwise() {
    let app = |name: &str, addr: &str| {
        manifest(name, &format!("{}{}", component("c", 1, ""), provider("web", "builtin://http-server", &http_link_trait("c", Some(("shared-addr", addr))))))
    };
    let h = || vec![serving(serving(host("h1", "x"), "early", "early-web"), "late", "late-web")];
    // Alike: shared, neither fails.
    let p = plan(
        &[deployed("early", app("early", "127.0.0.1:1"), 5, Owned::default()), deployed("late", app("late", "127.0.0.1:1"), 10, Owned::default())],
        &Actual { inventories: h(), ..Default::default() },
    );
    assert!(p.apps.iter().all(|a| a.status(&[], 0).state != AppState::Failed), "{p:?}");
    // Otherwise, nothing in place: the one deployed first keeps it; the other fails, naming it,
    // and never puts its own.
    let cases: [(Option<&str>, &str, &str); 3] = [
        (None, "late", "early"),
        (Some("127.0.0.1:2"), "early", "late"), // what is in place wins over who came first
        (Some("127.0.0.1:1"), "late", "early"),
    ];
    for (in_place, loser, keeper) in cases {
        let configs = in_place.map(|v| ("shared-addr".to_string(), values(v))).into_iter().collect();
        let p = plan(
            &[deployed("early", app("early", "127.0.0.1:1"), 5, Owned::default()), deployed("late", app("late", "127.0.0.1:2"), 10, Owned::default())],
            &Actual { inventories: h(), configs, ..Default::default() },
        );
        let (st, msg) = state(&p, loser);
        assert_eq!(st, AppState::Failed, "{in_place:?}");
        assert_eq!(
            msg,
            format!("config `shared-addr` conflicts with app `{keeper}`, which defines it with other values; change one of the manifests"),
            "{in_place:?}"
        );
        assert!(!steps(&p).iter().any(|s| s.starts_with(&format!("{loser}: put config"))), "{in_place:?}: {:?}", steps(&p));
        assert_ne!(state(&p, keeper).0, AppState::Failed, "{in_place:?}");
    }
}

#[test]
fn link_conflicts_name_the_app_that_keeps_the_slot() {
    let defs = |name: &str, since_ms: u64, links: Vec<Link>| AppDefs { name: name.into(), since_ms, links, configs: BTreeMap::new(), owned: Owned::default() };
    let other = defs("other", 20, vec![link("web", "c")]);
    let mine = link("web", "b");
    // Nothing in place: the app deployed first (10 < 20) keeps it; the other is told why.
    assert_eq!(link_conflict("first", 10, &mine, &[&other], &[]), None);
    let early = defs("early", 5, vec![link("web", "c")]);
    assert_eq!(
        link_conflict("late", 10, &mine, &[&early], &[]).as_deref(),
        Some("link `web` → `b` (wasi:http, name default) conflicts with app `early`, which defines it → `c`; change one of the manifests")
    );
    // What is in place wins over who came first.
    assert_eq!(link_conflict("late", 10, &mine, &[&early], std::slice::from_ref(&mine)), None);
    assert!(link_conflict("first", 10, &mine, &[&other], &[link("web", "c")]).is_some_and(|m| m.contains("app `other`")));
    // The same definition is shared, whoever came first.
    assert_eq!(link_conflict("late", 10, &mine, &[&defs("early", 5, vec![mine.clone()])], &[]), None);
    // Other interfaces, same target.
    let mut wider = link("web", "b");
    wider.interfaces.push("outgoing-handler".into());
    let m = link_conflict("late", 10, &mine, &[&defs("early", 5, vec![wider])], &[]).unwrap_or_default();
    assert!(m.ends_with("which defines it with interfaces [incoming-handler, outgoing-handler]; change one of the manifests"), "{m}");
    // Another slot (link name) is no conflict.
    let mut named = link("web", "c");
    named.name = "admin".into();
    assert_eq!(link_conflict("late", 10, &mine, &[&defs("early", 5, vec![named])], &[]), None);
}

#[test]
fn what_a_new_version_drops_goes_once_the_version_is_in_place_unless_another_app_defines_it() {
    // v1 put a link web → a-c and config `old-addr`; v2 defines neither (only the component).
    let v2 = manifest("a", &component("c", 1, ""));
    let before = owned(&[link("a-web", "a-c")], &["old-addr"]);
    let configs: BTreeMap<String, StringMap> = [("old-addr".to_string(), values("127.0.0.1:1"))].into();
    let links = vec![link("a-web", "a-c")];
    let not_yet = Actual { inventories: vec![host("h1", "x")], links: links.clone(), configs: configs.clone(), ..Default::default() };
    let p = plan(&[deployed("a", v2.clone(), 1, before.clone())], &not_yet);
    assert_eq!(steps(&p), ["a: scale a-c on h1 to 1 from file:///c.wasm"], "not in place: nothing is removed yet");
    let in_place = Actual { inventories: vec![running(host("h1", "x"), "a", "a-c", "file:///c.wasm", 1)], links, configs, ..Default::default() };
    let p = plan(&[deployed("a", v2.clone(), 1, before.clone())], &in_place);
    assert_eq!(steps(&p), ["a: delete link a-web -> a-c", "a: delete config old-addr"]);
    assert_eq!(state(&p, "a").0, AppState::Reconciling);
    // Another deployed app defines them: they stay for it, and this app forgets them.
    let keeper = manifest(
        "b",
        "    - name: x\n      type: component\n      properties:\n        image: file:///x.wasm\n        config:\n          - name: old-addr\n            properties:\n              address: \"127.0.0.1:1\"\n",
    );
    let p = plan(&[deployed("a", v2, 1, before), deployed("b", keeper, 2, Owned::default())], &in_place);
    assert!(!steps(&p).iter().any(|s| s.starts_with("a: delete config")), "{:?}", steps(&p));
    assert!(p.apps.iter().find(|a| a.name == "a").is_some_and(|a| !a.owned.configs.contains("old-addr")));
}

#[test]
fn undeploying_removes_what_the_app_runs_and_put_and_nothing_else() {
    let m = manifest(
        "a",
        &format!("{}{}", component("c", 1, ""), provider("web", "builtin://http-server", &http_link_trait("c", Some(("a-addr", "127.0.0.1:1"))))),
    );
    let l = with_config(link("a-web", "a-c"), "a-addr");
    let inventories = vec![serving(running(running(host("h1", "x"), "a", "a-c", "file:///c.wasm", 1), "user", "mine", "file:///m.wasm", 1), "a", "a-web")];
    let actual = Actual {
        inventories,
        links: vec![l.clone(), link("mine", "a-c")],
        configs: [("a-addr".to_string(), values("127.0.0.1:1"))].into(),
        ..Default::default()
    };
    let p = plan(&[undeployed("a", m.clone(), owned(&[l], &["a-addr"]))], &actual);
    assert_eq!(steps(&p), ["a: stop a-c on h1", "a: stop provider a-web on h1", "a: delete link a-web -> a-c", "a: delete config a-addr"]);
    assert_eq!(state(&p, "a").0, AppState::Undeploying);
    // Nothing left: Undeployed; settled: not planned at all.
    let p = plan(&[undeployed("a", m.clone(), Owned::default())], &Actual { inventories: vec![host("h1", "x")], ..Default::default() });
    assert!(p.steps.is_empty());
    assert_eq!(state(&p, "a"), (AppState::Undeployed, "nothing of the app runs".to_string()));
    let settled = AppInput { settled: true, ..undeployed("a", m, Owned::default()) };
    assert_eq!(plan(&[settled], &actual), Plan::default());
}

#[test]
fn undeployed_apps_are_planned_first_so_what_they_free_can_be_taken_in_the_same_pass() {
    let a = manifest("a", &component("c", 1, ""));
    let p = plan(
        &[deployed("b", a.clone(), 1, Owned::default()), undeployed("a", a, Owned::default())],
        &Actual { inventories: vec![host("h1", "x")], ..Default::default() },
    );
    let order: Vec<&str> = p.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(order, ["a", "b"]);
}

#[test]
fn statuses_tell_failures_and_what_is_missing() {
    let m = manifest("a", &component("c", 1, ""));
    let mut actual = Actual { inventories: vec![host("h1", "x")], ..Default::default() };
    actual.failures.insert("a-c".into(), Failure { host: "h1".into(), error: "cannot load".into() });
    let p = plan(&[deployed("a", m.clone(), 1, Owned::default())], &actual);
    assert_eq!(state(&p, "a"), (AppState::Failed, "`a-c` failed to start on host h1: cannot load".to_string()));
    let p = plan(&[deployed("a", m, 1, Owned::default())], &Actual { inventories: vec![host("h1", "x")], ..Default::default() });
    assert_eq!(state(&p, "a"), (AppState::Reconciling, "waiting for `a-c` on host h1: 0 of 1 replicas".to_string()));
    let failed = p.apps[0].status(&[p.steps[0].action.failed("no answer")], 7);
    assert_eq!((failed.state, failed.message.as_str(), failed.updated_ms), (AppState::Failed, "scaling `a-c` on host h1: no answer", 7));
    let invalid = AppInput { manifest: Err("bad".into()), ..deployed("a", manifest("a", &component("c", 1, "")), 1, Owned::default()) };
    let p = plan(&[invalid], &Actual::default());
    assert_eq!(state(&p, "a"), (AppState::Failed, "the stored manifest is invalid: bad".to_string()));
}

#[test]
fn resends_are_keyed_by_what_they_ask_for() {
    let scale = |n: u32| {
        Action::Scale(ScaleComponentCommand {
            host_id: "h".into(),
            component_id: "c".into(),
            max_instances: n,
            component_ref: "i".into(),
            ..Default::default()
        })
    };
    assert_eq!(scale(2).resend_key(), scale(2).resend_key());
    assert_ne!(scale(2).resend_key(), scale(0).resend_key());
    assert_eq!(Action::DeleteConfig("x".into()).resend_key(), None, "links and config are put every pass until they are in place");
}

#[test]
fn a_secret_becomes_a_reference_config_put_before_the_component_that_names_it() {
    let text = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: a\nspec:\n  policies:\n    - name: store\n      type: policy.secret.wasmcloud.dev/v1alpha1\n      properties:\n        backend: nats-kv\n  components:\n    - name: c\n      type: component\n      properties:\n        image: file:///c.wasm\n        secrets:\n          - name: token\n            properties:\n              policy: store\n              key: prod-token\n";
    let m = Manifest::parse(text).expect("a valid manifest");
    let p = plan(&[deployed("a", m, 1, Owned::default())], &Actual { inventories: vec![host("h1", "x")], ..Default::default() });
    assert_eq!(steps(&p), ["a: put config SECRET_a-c_token", "a: scale a-c on h1 to 1 from file:///c.wasm"]);
    let Action::PutConfig { values, .. } = &p.steps[0].action else { panic!("a config put") };
    let reference = SecretReference::from_config("SECRET_a-c_token", values).expect("a secret reference");
    assert_eq!((reference.name.as_str(), reference.backend.as_str(), reference.key.as_str()), ("token", "nats-kv", "prod-token"));
    let Action::Scale(cmd) = &p.steps[1].action else { panic!("a scale") };
    assert_eq!(cmd.config, ["SECRET_a-c_token"], "the component is granted exactly its secrets");
    assert!(p.apps[0].owned.configs.contains("SECRET_a-c_token"), "undeploying removes the reference");
}

#[test]
fn what_the_user_put_is_never_changed_or_deleted_by_an_app() {
    // App `a` defines config `hello-http` for its link web → c, the name of one the user has.
    let app = |addr: &str| {
        manifest("a", &format!("{}{}", component("c", 1, ""), provider("web", "builtin://http-server", &http_link_trait("c", Some(("hello-http", addr))))))
    };
    let up = || vec![serving(running(host("h1", "x"), "a", "a-c", "file:///c.wasm", 1), "a", "a-web")];
    let users = |addr: &str| -> BTreeMap<String, StringMap> { [("hello-http".to_string(), values(addr))].into() };
    let defined = with_config(link("a-web", "a-c"), "hello-http");
    // (case, the user's value, the app's value, the app's state, steps)
    let cases: [(&str, &str, &str, AppState, &[&str]); 2] = [
        (
            "other values: a conflict naming the config and its owner, nothing put",
            "127.0.0.1:1",
            "127.0.0.1:2",
            AppState::Failed,
            &["a: put link a-web -> a-c"],
        ),
        ("alike: used as it is", "127.0.0.1:1", "127.0.0.1:1", AppState::Reconciling, &["a: put link a-web -> a-c"]),
    ];
    for (what, user, mine, st, want) in cases {
        let p = plan(&[deployed("a", app(mine), 1, Owned::default())], &Actual { inventories: up(), configs: users(user), ..Default::default() });
        assert_eq!(steps(&p), want, "{what}");
        let (state_now, message) = state(&p, "a");
        assert_eq!(state_now, st, "{what}: {message}");
        if st == AppState::Failed {
            assert!(message.starts_with("config `hello-http` conflicts with the user's config `hello-http` (no app put it)"), "{what}: {message}");
            assert!(message.contains("wash config del hello-http"), "{what}: {message}");
        }
        assert!(!p.apps[0].owned.configs.contains("hello-http"), "{what}: the app claims the user's config");
        // Undeploying it, whatever it recorded of the rest, leaves the user's config.
        let gone = Actual { inventories: up(), configs: users(user), links: vec![defined.clone()], ..Default::default() };
        let p = plan(&[undeployed("a", app(mine), owned(std::slice::from_ref(&defined), &[]))], &gone);
        assert!(!steps(&p).iter().any(|s| s.contains("delete config")), "{what}: {:?}", steps(&p));
        assert!(steps(&p).contains(&"a: delete link a-web -> a-c".to_string()), "{what}: what the app put still goes: {:?}", steps(&p));
    }

    // The user's link in the slot: alike, used and never owned; otherwise a conflict, never replaced.
    let m = manifest("a", &format!("{}{}", component("c", 1, ""), provider("web", "builtin://http-server", &http_link_trait("c", None))));
    let p = plan(&[deployed("a", m.clone(), 1, Owned::default())], &Actual { inventories: up(), links: vec![link("a-web", "a-c")], ..Default::default() });
    assert!(steps(&p).is_empty(), "{:?}", steps(&p));
    assert_eq!(state(&p, "a").0, AppState::Deployed);
    assert!(p.apps[0].owned.links.is_empty(), "the app claims the user's link");
    let p = plan(&[undeployed("a", m.clone(), Owned::default())], &Actual { inventories: up(), links: vec![link("a-web", "a-c")], ..Default::default() });
    assert!(!steps(&p).iter().any(|s| s.contains("delete link")), "{:?}", steps(&p));
    let p = plan(&[deployed("a", m, 1, Owned::default())], &Actual { inventories: up(), links: vec![link("a-web", "mine")], ..Default::default() });
    assert!(steps(&p).is_empty(), "{:?}", steps(&p));
    let (st, message) = state(&p, "a");
    assert_eq!(st, AppState::Failed);
    assert_eq!(
        message,
        "link `a-web` → `a-c` (wasi:http, name default) conflicts with the user's link → `mine` (no app put it); an app never changes or deletes a link it did not put: change the manifest, or delete the user's with `wash link del a-web wasi http --link-name default`"
    );

    // Config another app put (here one being undeployed) is no user's: the sharing rules hold.
    let p = plan(
        &[deployed("a", app("127.0.0.1:2"), 1, Owned::default()), undeployed("old", app("127.0.0.1:1"), owned(&[], &["hello-http"]))],
        &Actual { inventories: up(), configs: users("127.0.0.1:1"), ..Default::default() },
    );
    assert!(steps(&p).contains(&"a: put config hello-http".to_string()), "{:?}", steps(&p));
    assert_ne!(state(&p, "a").0, AppState::Failed);
}
