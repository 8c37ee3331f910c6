//! Manifest parsing and validation: the examples, every kind of mistake (each reported with its
//! path), JSON, round trips, the YAML limits, and the helpers.

use super::*;

const HTTP_KV_COUNTER: &str = include_str!("../../../examples/http-kv-counter/wadm.yaml");

fn examples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The paths of the errors of `text`, which must not parse.
#[track_caller]
fn error_paths(text: &str) -> Vec<String> {
    match Manifest::parse(text) {
        Ok(m) => panic!("parsed, but should not have: {m:?}"),
        Err(e) => e.errors().iter().map(|e| e.path.clone()).collect(),
    }
}

/// The one error of `text`, which must not parse.
#[track_caller]
fn one_error(text: &str) -> ManifestError {
    let errors = Manifest::parse(text).expect_err("should not parse").into_vec();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().expect("one")
}

#[track_caller]
fn parse(text: &str) -> Manifest {
    Manifest::parse(text).unwrap_or_else(|e| panic!("does not parse:\n{e}"))
}

/// JSON of `m`, parsed again, gives `m` back.
#[track_caller]
fn assert_round_trip(m: &Manifest) {
    let json = serde_json::to_string_pretty(m).expect("encodes");
    let back = Manifest::parse(&json).unwrap_or_else(|e| panic!("our own JSON does not parse:\n{e}\n{json}"));
    assert_eq!(&back, m, "{json}");
}

/// A valid manifest with `component` (YAML lines at the indentation of a component entry)
/// as its only component after a valid `echo` component.
fn with_component(component: &str) -> String {
    format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: app\nspec:\n  components:\n    \
         - name: echo\n      type: component\n      properties:\n        image: file:///echo.wasm\n{component}"
    )
}

#[test]
fn the_examples_parse() {
    let m = parse(HTTP_KV_COUNTER);
    assert_eq!((m.name(), m.version(), m.description()), ("http-kv-counter", Some("v0.1.0"), Some("Counts requests per path in a key-value store")));
    let names: Vec<&str> = m.spec.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["counter", "keyvalue", "httpserver"]);
    let counter = m.component("counter").expect("counter");
    assert_eq!(counter.kind, ComponentType::Component);
    assert_eq!(counter.properties.image, "file://../../target/wasm/wasm32-wasip2/release/http_kv_counter.wasm");
    assert_eq!(m.component_id(counter), "http_kv_counter-counter");
    assert_eq!(counter.scaler(), Some(&Trait::SpreadScaler(Scaler { instances: 4, spread: vec![] })));
    let links: Vec<(&str, &Link)> = m.links().map(|(c, l)| (c.name.as_str(), l)).collect();
    assert_eq!(links.len(), 2);
    let (source, kv) = links[0];
    assert_eq!((source, kv.namespace.as_str(), kv.package.as_str(), kv.link_name()), ("counter", "wasi", "keyvalue", "default"));
    assert_eq!(kv.interfaces, ["store", "atomics"]);
    assert_eq!(kv.target.name, "keyvalue");
    assert_eq!(
        kv.target.config,
        [ConfigProperty {
            name: "counter-bucket".into(),
            properties: Some(StringMap::from([("bucket".into(), "counters".into()), ("enable_bucket_auto_create".into(), "true".into())])),
        }]
    );
    let (source, http) = links[1];
    assert_eq!((source, http.target.name.as_str()), ("httpserver", "counter"));
    assert_eq!(http.source.config[0].properties.as_ref().and_then(|p| p.get("address")).map(String::as_str), Some("127.0.0.1:8001"));
    assert_eq!(m.component("keyvalue").map(|c| c.kind), Some(ComponentType::Capability));
    assert_round_trip(&m);

    // Every wadm.yaml under examples/ (messaging-echo's among them).
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples/") {
        let path = entry.expect("entry").path().join("wadm.yaml");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let m = Manifest::parse(&text).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            assert_round_trip(&m);
            seen += 1;
        }
    }
    assert!(seen >= 1, "no examples/*/wadm.yaml found");
}

#[test]
fn ten_mistakes_give_ten_errors_each_naming_its_field() {
    let text = r#"
apiVersion: core.oam.dev/v1
kind: Application
metadata:
  name: my app
spec:
  components:
    - name: web
      type: provider
      properties:
        image: file:///web.wasm
    - name: api
      type: component
      properties:
        image: file:///api.wasm
        confg: []
      traits:
        - type: spreadscaler
          properties:
            instances: 0
            spread:
              - name: east
                requirements:
                  zone: 1
              - name: west
                weight: -3
        - type: link
          properties:
            namespace: wasi
            package: keyvalue
            interfaces: [store]
            target:
              name: kv-store
    - name: kv
      type: capability
      properties:
        image: https://example.com/kv.tar
      traits:
        - type: spreadscalar
          properties:
            instances: 1
"#;
    let errors = Manifest::parse(text).expect_err("ten mistakes").into_vec();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "apiVersion",
            "metadata.name",
            "spec.components[0].type",
            "spec.components[1].properties.confg",
            "spec.components[1].traits[0].properties.instances",
            "spec.components[1].traits[0].properties.spread[0].requirements.zone",
            "spec.components[1].traits[0].properties.spread[1].weight",
            "spec.components[2].properties.image",
            "spec.components[2].traits[0].type",
            "spec.components[1].traits[1].properties.target.name",
        ],
        "{errors:#?}"
    );
    // Document order, then the checks across components (link targets). Every message says
    // what is expected.
    let message = |path: &str| errors.iter().find(|e| e.path == path).map(|e| e.message.clone()).unwrap_or_default();
    assert_eq!(message("apiVersion"), "must be `core.oam.dev/v1beta1`; got `core.oam.dev/v1`");
    assert!(message("metadata.name").contains("application name `my app` contains ' '"), "{}", message("metadata.name"));
    assert!(message("spec.components[0].type").contains("(capability providers are `capability`)"), "{}", message("spec.components[0].type"));
    assert_eq!(message("spec.components[1].properties.confg"), "unknown field; did you mean `config`? expected one of: image, id, config, secrets");
    assert_eq!(message("spec.components[1].traits[0].properties.instances"), "must be a positive integer (1 to 4294967295); got the number `0`");
    assert_eq!(
        message("spec.components[1].traits[0].properties.spread[0].requirements.zone"),
        "must be a string (a string value); got the number `1` (quote it: \"1\")"
    );
    assert_eq!(message("spec.components[1].traits[0].properties.spread[1].weight"), "must be a positive integer (1 to 4294967295); got the number `-3`");
    assert_eq!(
        message("spec.components[1].traits[1].properties.target.name"),
        "names no component of this manifest: `kv-store`; expected one of: web, api, kv"
    );
    assert!(message("spec.components[2].properties.image").starts_with("unsupported scheme `https://`"));
    assert!(message("spec.components[2].traits[0].type").contains("did you mean `spreadscaler`?"));
    // Lines point into the YAML.
    assert_eq!(errors[0].line, Some(2));
    assert_eq!(errors[6].line, Some(text.lines().position(|l| l.contains("weight: -3")).map(|i| i + 1)).flatten());

    // Displayed one per line, `path: message`.
    let shown = Manifest::parse(text).expect_err("invalid").to_string();
    assert_eq!(shown.lines().count(), 10);
    assert!(shown.starts_with("apiVersion: must be `core.oam.dev/v1beta1`; got `core.oam.dev/v1`\nmetadata.name: "), "{shown}");
}

#[test]
fn cross_component_mistakes() {
    let text = with_component(
        r#"    - name: kv
      type: capability
      properties:
        image: builtin://keyvalue
        config:
          - name: shared
            properties: {a: "1"}
      traits:
        - type: link
          properties: {namespace: wasi, package: http, interfaces: [incoming-handler], target: {name: kv}}
        - type: link
          properties: {namespace: wasi, package: http, interfaces: [incoming-handler], target: {name: http}}
    - name: http
      type: capability
      properties:
        image: builtin://http-server
        config:
          - name: shared
            properties: {a: "2"}
          - name: shared
      traits:
        - type: link
          properties: {namespace: wasi, package: http, interfaces: [incoming-handler], target: {name: ech}}
        - type: link
          properties: {namespace: wasi, package: http, interfaces: [incoming-handler], target: {name: echo}}
        - type: link
          properties: {namespace: wasi, package: http, interfaces: [incoming-handler, x], target: {name: echo}}
    - name: echo
      type: component
      properties:
        image: file:///other.wasm
"#,
    );
    let errors = Manifest::parse(&text).expect_err("invalid").into_vec();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expected = [
        "spec.components[3].name: component name `echo` is already spec.components[0]'s name",
        "spec.components[1].traits[0].properties.target.name: a component cannot link to itself",
        "spec.components[1].traits[1].properties.target.name: capability `kv` links to capability `http`; a capability provider calls components only",
        "spec.components[1].traits[1].properties: conflicts with traits[0]: both link wasi:http/incoming-handler under link name `default`, to different targets; give one another `name`",
        "spec.components[2].traits[0].properties.target.name: names no component of this manifest: `ech`; did you mean `echo`? expected one of: echo, kv, http",
        "spec.components[2].traits[1].properties: conflicts with traits[0]: both link wasi:http/incoming-handler under link name `default`, to different targets; give one another `name`",
        "spec.components[2].traits[2].properties: repeats the link of traits[1] (same namespace, package, name and target); list every interface in one link",
        "spec.components[2].properties.config[0].properties: config `shared` is defined with other properties at spec.components[1].properties.config[0]; give one of them another name",
    ];
    assert_eq!(shown, expected, "{shown:#?}");
}

#[test]
fn ids_must_be_unique() {
    let text = with_component(
        "    - name: Echo\n      type: component\n      properties:\n        image: file:///b.wasm\n    \
         - name: other\n      type: component\n      properties:\n        image: file:///c.wasm\n        id: app-echo\n",
    );
    let errors: Vec<String> = Manifest::parse(&text).expect_err("ids collide").errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "spec.components[1].name: component id `app-echo` is also spec.components[0]'s id; set properties.id to tell them apart",
            "spec.components[2].properties.id: component id `app-echo` is also spec.components[0]'s id",
        ]
    );
    let e = one_error(&with_component("    - name: x\n      type: component\n      properties:\n        image: file:///b.wasm\n        id: a.b\n"));
    assert_eq!(e.to_string(), "spec.components[1].properties.id: component id `a.b` contains '.'; use only letters, digits, `_` and `-`");
}

#[test]
fn default_ids_follow_wadm() {
    assert_eq!(default_component_id("http-kv-counter", "counter"), "http_kv_counter-counter");
    assert_eq!(default_component_id("My.App", "Http Server"), "my_app-http_server");
    let m = parse(&with_component("    - name: other\n      type: component\n      properties:\n        image: file:///b.wasm\n        id: custom\n"));
    let ids: Vec<String> = m.spec.components.iter().map(|c| m.component_id(c)).collect();
    assert_eq!(ids, ["app-echo", "custom"]);
    assert_eq!(
        managed_annotations("shop"),
        StringMap::from([("wasmcloud.dev/managed-by".into(), "wadm".into()), ("wasmcloud.dev/appspec".into(), "shop".into())])
    );
}

#[test]
fn spread_arithmetic() {
    assert_eq!(spread_counts(6, &[2, 1]), [4, 2]);
    assert_eq!(spread_counts(7, &[1, 1, 1]), [3, 2, 2]);
    assert_eq!(spread_counts(5, &[1, 3]), [1, 4], "largest remainder first (1.25, 3.75)");
    assert_eq!(spread_counts(3, &[100, 100]), [2, 1]);
    assert_eq!(spread_counts(0, &[1, 2]), [0, 0]);
    assert_eq!(spread_counts(9, &[100]), [9]);
    assert_eq!(spread_counts(9, &[]), Vec::<u32>::new());
    assert_eq!(spread_counts(u32::MAX, &[u32::MAX, u32::MAX]), [u32::MAX / 2 + 1, u32::MAX / 2]);
    for instances in 0..50 {
        for weights in [&[1u32, 2, 3][..], &[7, 7, 7, 7], &[1, 100], &[3]] {
            let counts = spread_counts(instances, weights);
            assert_eq!(counts.iter().sum::<u32>(), instances, "{instances} over {weights:?}: {counts:?}");
        }
    }
    let m = parse(&with_component(
        "    - name: s\n      type: component\n      properties:\n        image: file:///s.wasm\n      traits:\n        \
         - type: spreadscaler\n          properties:\n            instances: 6\n            spread:\n              \
         - name: a\n                requirements: {zone: a}\n                weight: 2\n              \
         - name: b\n                requirements: {zone: b}\n                weight: 1\n",
    ));
    let Some(Trait::SpreadScaler(scaler)) = m.component("s").and_then(Component::scaler) else { panic!("no scaler") };
    assert_eq!(scaler.spread_counts(), [4, 2]);
    assert_eq!(scaler.spread[0].requirements.get("zone").map(String::as_str), Some("a"));
    // Weight defaults to 100.
    let m = parse(&with_component(
        "    - name: d\n      type: capability\n      properties:\n        image: builtin://keyvalue\n      traits:\n        \
         - type: daemonscaler\n          properties:\n            instances: 1\n            spread: [{name: all}]\n",
    ));
    let Some(Trait::DaemonScaler(scaler)) = m.component("d").and_then(Component::scaler) else { panic!("no daemonscaler") };
    assert_eq!(scaler.spread[0].weight, DEFAULT_WEIGHT);
    assert_round_trip(&m);
}

#[test]
fn json_is_accepted() {
    let json = r#"{
	"apiVersion": "core.oam.dev/v1beta1",
	"kind": "Application",
	"metadata": {"name": "j", "annotations": {"version": "v1"}},
	"spec": {"components": [
		{"name": "c", "type": "component", "properties": {"image": "ghcr.io/org/c:1.0"},
		 "traits": [{"type": "spreadscaler", "properties": {"instances": 2}},
		            {"type": "link", "properties": {"namespace": "wasi", "package": "keyvalue", "interfaces": ["store"], "name": "cache", "target": {"name": "kv"}}}]},
		{"name": "kv", "type": "capability", "properties": {"image": "builtin://keyvalue"}}
	]}
}"#;
    let m = parse(json);
    assert_eq!(m.version(), Some("v1"));
    assert_eq!(m.links().map(|(_, l)| l.link_name()).collect::<Vec<_>>(), ["cache"]);
    assert_round_trip(&m);

    // Mistakes in JSON get paths too (no lines).
    let errors = Manifest::parse(&json.replace("\"instances\": 2", "\"instances\": \"2\"").replace("\"kv\"}}", "\"kvv\"}}")).expect_err("bad");
    let shown: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "spec.components[0].traits[0].properties.instances: must be a positive integer (1 to 4294967295); got the string `2` (write it without quotes)",
            "spec.components[0].traits[1].properties.target.name: names no component of this manifest: `kvv`; did you mean `kv`? expected one of: c, kv",
        ]
    );
    assert!(errors.errors().iter().all(|e| e.line.is_none()));
    let e = one_error(&json.replace("\"instances\": 2", "\"instances\": 2.0"));
    assert!(e.message.ends_with("got the number `2.0`"), "{e}");

    // Broken JSON: the JSON error, with its line.
    let e = one_error("{\"apiVersion\": \"core.oam.dev/v1beta1\",\n\"kind\": \"Application\"");
    assert!(e.message.starts_with("not valid JSON: EOF while parsing an object at line 2"), "{e}");
    assert_eq!((e.path.as_str(), e.line), ("", Some(2)));
    // Flow-style YAML that is not JSON is still YAML.
    let flow = "{apiVersion: core.oam.dev/v1beta1, kind: Application, metadata: {name: f}, spec: {components: [{name: c, type: component, properties: {image: file:///c.wasm}}]}}";
    assert_eq!(parse(flow).name(), "f");
}

#[test]
fn round_trips() {
    let text = with_component(
        r#"      traits:
        - type: spreadscaler
          properties:
            instances: 3
            spread:
              - name: east
                requirements: {zone: east, "a.b/c": "x y"}
                weight: 5
              - name: west
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
            name: out
            source: {config: [{name: src, properties: {}}]}
            target: {name: nats, config: [{name: existing}]}
    - name: nats
      type: capability
      properties:
        image: localhost:5000/providers/nats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
        id: nats-1
        config: [{name: existing}, {name: tuning, properties: {"max": "10"}}]
"#,
    );
    let text = text.replace("metadata:\n  name: app\n", "metadata:\n  name: app\n  annotations: {version: \"1.0\", \"x/y\": z}\n  labels: {team: a}\n");
    let m = parse(&text);
    assert_eq!(m.metadata.annotations.get("x/y").map(String::as_str), Some("z"));
    assert_round_trip(&m);
    assert_round_trip(&parse(HTTP_KV_COUNTER));
}

#[test]
fn string_fields_want_strings() {
    let text = with_component("").replace("name: app\n", "name: app\n  annotations:\n    version: 1.0\n    description: true\n");
    let shown: Vec<String> = Manifest::parse(&text).expect_err("not strings").errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "metadata.annotations.version: must be a string (a string value); got the number `1.0` (quote it: \"1.0\")",
            "metadata.annotations.description: must be a string (a string value); got the boolean `true` (quote it: \"true\")",
        ]
    );
    // Quoted, or tagged !!str, they are strings.
    let m = parse(&text.replace("version: 1.0", "version: \"1.0\"").replace("description: true", "description: !!str true"));
    assert_eq!((m.version(), m.description()), (Some("1.0"), Some("true")));
}

#[test]
fn structural_mistakes() {
    // Missing pieces, each named.
    assert_eq!(error_paths("kind: Application\n"), ["apiVersion", "metadata", "spec"]);
    assert_eq!(
        error_paths("apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {}\nspec: {components: [{}]}\n"),
        ["metadata.name", "spec.components[0].name", "spec.components[0].type", "spec.components[0].properties"]
    );
    assert_eq!(
        one_error("apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: a}\nspec:\n  components: []\n").to_string(),
        "spec.components: is empty; an application needs at least one component"
    );
    // Wrong shapes.
    let e = one_error(&with_component("      traits: {type: link}\n"));
    assert_eq!(e.to_string(), "spec.components[0].traits: must be a list of traits (type, properties); got a map");
    let e = one_error("- a\n- b\n");
    assert_eq!(e.to_string(), "must be a map of apiVersion, kind, metadata, spec; got a list");
    // Unknown and unsupported fields, duplicate keys.
    let text = with_component("      propertes: {}\n").replace("kind: Application\n", "kind: Application\nkind: Application\n");
    let shown: Vec<String> = Manifest::parse(&text).expect_err("bad").errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["kind: is given twice", "spec.components[0].propertes: unknown field; did you mean `properties`? expected one of: name, type, properties, traits",]
    );
    let e = one_error(&with_component("").replace("file:///echo.wasm\n", "file:///echo.wasm\n        application: {name: shared}\n"));
    assert_eq!(e.to_string(), "spec.components[0].properties.application: `application` is not supported by Trellis yet; remove it");
    // A trait with no properties, a second scaler, the old `linkdef`.
    let shown: Vec<String> = Manifest::parse(&with_component(
        "      traits:\n        - type: spreadscaler\n        - type: daemonscaler\n          properties: {instances: 1}\n        - type: linkdef\n",
    ))
    .expect_err("bad")
    .errors()
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        shown,
        [
            "spec.components[0].traits[0].properties: missing; expected a map with `instances`",
            "spec.components[0].traits[1].type: a second scaler; traits[0] is already a spreadscaler (a component has at most one)",
            "spec.components[0].traits[2].type: unknown trait type `linkdef`; did you mean `link`? expected spreadscaler, daemonscaler or link",
        ]
    );
}

#[test]
fn link_mistakes() {
    let link = |props: &str| with_component(&format!("      traits:\n        - type: link\n          properties: {props}\n"));
    assert_eq!(
        one_error(&link("{namespace: wasi, package: http, interfaces: [], target: {name: x}}")).to_string(),
        "spec.components[0].traits[0].properties.interfaces: is empty; name at least one interface of the package, such as [store]"
    );
    assert_eq!(
        error_paths(&link("{target: {name: echo}}")),
        [
            "spec.components[0].traits[0].properties.namespace",
            "spec.components[0].traits[0].properties.package",
            "spec.components[0].traits[0].properties.interfaces"
        ]
    );
    let shown: Vec<String> = Manifest::parse(&link("{namespace: Wasi.x, package: key value, interfaces: [store, store, 3], name: a b, target: echo}"))
        .expect_err("bad")
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    let p = "spec.components[0].traits[0].properties";
    assert_eq!(
        shown,
        [
            format!("{p}.namespace: `Wasi.x` is not a WIT name (kebab-case words of letters and digits, such as `incoming-handler`)"),
            format!("{p}.package: `key value` is not a WIT name (kebab-case words of letters and digits, such as `incoming-handler`)"),
            format!("{p}.interfaces[1]: interface `store` is listed twice"),
            format!("{p}.interfaces[2]: must be a string (an interface name such as `store`); got the number `3` (quote it: \"3\")"),
            format!("{p}.name: link name `a b` contains ' '; use only letters, digits, `_` and `-`"),
            format!("{p}.target: must be a map of name, config, such as `target: {{name: NAME}}`; got the string `echo`"),
        ]
    );
}

#[test]
fn images() {
    let ok = [
        "file:///abs/x.wasm",
        "file://./rel/x.wasm",
        "ghcr.io/wasmcloud/components/http-hello-world-rust:0.1.0",
        "oci://ghcr.io/org/name:1.0",
        "localhost:5000/x",
        "lattice://hello:1.0",
        "registry.example.com/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ];
    for image in ok {
        assert_eq!(check_image(image, Some(ComponentType::Component)), Ok(()), "{image}");
    }
    assert_eq!(check_image("builtin://http-server", Some(ComponentType::Capability)), Ok(()));
    let bad = [
        ("", "must not be empty"),
        ("file://", "`file://` names no file"),
        ("builtin://http-server", "names a provider built into the host; a component needs"),
        ("builtin://a.b", "built-in provider name `a.b` contains '.'"),
        ("http://example.com/x.wasm", "unsupported scheme `http://`"),
        ("./x.wasm", "looks like a file path; write it as file://./x.wasm"),
        ("/abs/x.wasm", "looks like a file path"),
        ("nginx", "it has no registry"),
        ("ghcr.io/Org/x:1", "repository path parts are lower-case"),
        ("ghcr.io/org/x:", "a tag is up to 128"),
        ("ghcr.io/org/x@sha256:12", "a digest is sha256: and 64 lower-case hex digits"),
        ("lattice://Hello:1", "is not a lattice reference"),
        ("ghcr.io/org/x y", "contains whitespace"),
    ];
    for (image, want) in bad {
        let err = check_image(image, Some(ComponentType::Component)).expect_err(image);
        assert!(err.contains(want), "{image}: {err}");
    }
}

#[test]
fn yaml_limits_and_features() {
    // Anchors and aliases work.
    let text = with_component(
        "    - name: b\n      type: component\n      properties: &props\n        image: file:///b.wasm\n    \
         - name: c\n      type: component\n      properties: *props\n",
    );
    let m = parse(&text);
    assert_eq!(m.component("c").map(|c| c.properties.image.as_str()), Some("file:///b.wasm"));
    // A billion laughs is refused, quickly.
    let mut laughs = String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for i in 1..10 {
        let p = i - 1;
        laughs.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    let start = std::time::Instant::now();
    let e = one_error(&laughs);
    assert!(e.message.contains("expands (through YAML aliases)"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // Deep nesting is refused.
    let deep = format!("x: {}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(one_error(&deep).to_string(), "nested more than 64 levels deep");
    let deeper = format!("x: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(one_error(&deeper).message.contains("recursion limit exceeded"), "saphyr's own limit");
    let deep_json = format!("{{\"x\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(one_error(&deep_json).message.starts_with("not valid JSON: recursion limit exceeded"));
    // One document per file; not empty; not too big; syntax errors with their line.
    assert!(one_error(&format!("{}---\n{}", with_component(""), with_component(""))).message.contains("more than one YAML document"));
    assert!(one_error("").message.starts_with("the manifest is empty"));
    assert!(one_error("# only a comment\n").message.starts_with("the manifest is empty"));
    assert!(one_error(&"#".repeat(MAX_MANIFEST_BYTES + 1)).message.contains("the limit is 1048576"));
    let e = one_error("apiVersion: x\nkind: [a\nmetadata: b\n");
    assert!(e.message.starts_with("not valid YAML: "), "{e}");
    assert!(e.line.is_some());
    // Unsupported tags and complex keys.
    assert!(one_error("apiVersion: !custom x\n").message.contains("the YAML tag `!custom` is not supported"));
    assert!(one_error("? [a]\n: b\n").message.contains("keys must be strings"));
}

#[test]
fn error_lists_are_capped() {
    let mut text = with_component("");
    text.push_str("      traits:\n");
    for _ in 0..(MAX_ERRORS + 50) {
        text.push_str("        - type: nope\n");
    }
    let errors = Manifest::parse(&text).expect_err("bad").into_vec();
    assert_eq!(errors.len(), MAX_ERRORS + 1);
    assert_eq!(errors[MAX_ERRORS].message, "… and 50 more mistakes not listed");
}

#[test]
fn scalars_follow_yaml_1_2() {
    for (raw, want) in [
        ("~", "null"),
        ("null", "null"),
        ("True", "bool"),
        ("0x1F", "int"),
        ("0o17", "int"),
        ("-12", "int"),
        ("1.5e3", "float"),
        (".inf", "float"),
        ("1.0.0", "str"),
        ("yes", "str"),
        ("on", "str"),
        ("0.1.0", "str"),
        ("e5", "str"),
    ] {
        let got = match resolve_plain(raw) {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Seq(_) | Value::Map(_) => "collection",
        };
        assert_eq!(got, want, "{raw}");
    }
    assert!(matches!(resolve_plain("0x1F"), Value::Int(31)));
    assert!(matches!(resolve_plain("99999999999999999999"), Value::Float(_)));
}

#[test]
fn suggestions() {
    assert_eq!(did_you_mean("imgae", PROPERTIES_FIELDS), Some("image"));
    assert_eq!(did_you_mean("Image", PROPERTIES_FIELDS), Some("image"));
    assert_eq!(did_you_mean("interface", LINK_FIELDS), Some("interfaces"));
    assert_eq!(did_you_mean("zzz", PROPERTIES_FIELDS), None);
    assert_eq!(did_you_mean("q", PROPERTIES_FIELDS), None);
    assert_eq!(did_you_mean("linkdef", TRAIT_TYPES), Some("link"));
}

/// A manifest with `policies` (YAML, indented by 2 under `spec`) and one component `c` with
/// `secrets` (YAML, indented by 8), of `kind`.
fn with_secrets(policies: &str, kind: &str, secrets: &str) -> String {
    format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: a\nspec:\n{policies}  components:\n    - name: c\n      type: {kind}\n      properties:\n        image: file:///c.wasm\n{secrets}"
    )
}

const NATS_KV_POLICY: &str = "  policies:\n    - name: store\n      type: policy.secret.wasmcloud.dev/v1alpha1\n      properties:\n        backend: nats-kv\n";

#[test]
fn secrets_name_a_secret_policy_of_the_manifest() {
    let secrets = "        secrets:\n          - name: api-token\n            properties:\n              policy: store\n              key: prod-token\n              field: value\n";
    let m = Manifest::parse(&with_secrets(NATS_KV_POLICY, "component", secrets)).expect("a valid manifest");
    assert_eq!(
        m.spec.policies,
        [Policy { name: "store".into(), ty: SECRET_POLICY_TYPE.into(), properties: [("backend".to_string(), "nats-kv".to_string())].into() }]
    );
    let s = &m.spec.components[0].properties.secrets[0];
    assert_eq!(
        (s.name.as_str(), s.properties.policy.as_str(), s.properties.key.as_str(), s.properties.field.as_deref()),
        ("api-token", "store", "prod-token", Some("value"))
    );
    // What JSON carries (the wadm API answers with it) parses back to the same.
    assert_eq!(Manifest::parse(&serde_json::to_string(&m).expect("json")).expect("its JSON parses"), m);

    let cases = [
        (
            NATS_KV_POLICY.replace("store", "other"),
            "component",
            "spec.components[0].properties.secrets[0].properties.policy: names no policy of `spec.policies` (defined: other)",
        ),
        (
            String::new(),
            "component",
            "spec.components[0].properties.secrets[0].properties.policy: names no policy of `spec.policies` (the manifest defines none)",
        ),
        (
            NATS_KV_POLICY.replace("policy.secret.wasmcloud.dev/v1alpha1", "policy.other/v1"),
            "component",
            "spec.components[0].properties.secrets[0].properties.policy: policy `store` is of type `policy.other/v1`; a secret needs one of type `policy.secret.wasmcloud.dev/v1alpha1`",
        ),
        (
            NATS_KV_POLICY.replace("        backend: nats-kv\n", "        region: eu\n"),
            "component",
            "spec.policies[0].properties: a secret policy needs `backend`: the secrets backend to ask (Trellis' built-in one is `nats-kv`)",
        ),
    ];
    for (policies, kind, want) in cases {
        let shown: Vec<String> = Manifest::parse(&with_secrets(&policies, kind, secrets)).expect_err(want).errors().iter().map(ToString::to_string).collect();
        assert!(shown.iter().any(|e| e == want), "{shown:#?}");
    }
    let no_key = secrets.replace("              key: prod-token\n", "");
    let e = one_error(&with_secrets(NATS_KV_POLICY, "component", &no_key));
    assert_eq!(e.to_string(), "spec.components[0].properties.secrets[0].properties.key: missing; expected the secret's key in the backend");
}

/// What the wadm API carries (`GetModelResponse.manifest`) must decode into wadm-types 0.8's
/// `Manifest`, which requires `metadata.annotations`, every spread's `requirements` and every
/// policy's `properties`, and refuses unknown fields: our JSON always has the first three, even
/// empty, and uses only wadm's field names.
#[test]
fn manifest_json_has_the_fields_wadm_types_requires() {
    let text = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: a\nspec:\n  policies:\n    - name: p\n      type: other.policy/v1\n  components:\n    - name: c\n      type: component\n      properties:\n        image: file:///c.wasm\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: 2\n            spread:\n              - name: all\n";
    let m = Manifest::parse(text).expect("a valid manifest");
    let v = serde_json::to_value(&m).expect("json");
    assert_eq!(v["metadata"]["annotations"], serde_json::json!({}));
    assert_eq!(v["spec"]["components"][0]["traits"][0]["properties"]["spread"][0]["requirements"], serde_json::json!({}));
    assert_eq!(v["spec"]["policies"][0]["properties"], serde_json::json!({}));
    let component = &v["spec"]["components"][0];
    let keys: Vec<&str> = component.as_object().expect("a map").keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "properties", "traits", "type"]);
    let props: Vec<&str> = component["properties"].as_object().expect("a map").keys().map(String::as_str).collect();
    assert_eq!(props, ["image"], "empty lists and absent ids are left out, as wadm does");
}
