//! Embeds the `wash new` templates (`templates/NAME/…`) and the WIT each needs from
//! `../interfaces` into the binary: `$OUT_DIR/templates.rs` holds one `Template` per folder,
//! each file as `(path in the new project, include_str!(…))`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// (folder of ../interfaces, where its .wit files go in the new project).
type Wit = (&'static str, &'static str);

/// (template, description, the WIT it takes from ../interfaces).
const TEMPLATES: &[(&str, &str, &[Wit])] = &[
    ("hello-http", "Rust: a wasi:http component that answers with a greeting", &[]),
    ("kv-counter", "Rust: wasi:http and wasi:keyvalue, counting requests in a store", &[("wasi-keyvalue", "wit/deps/wasi-keyvalue")]),
    ("messaging", "Rust: wasmcloud:messaging, answering NATS requests", &[("wasmcloud-messaging", "wit/deps/wasmcloud-messaging")]),
    ("hello-http-python", "Python (componentize-py): a wasi:http component that answers with a greeting", &[("wasi-http", "wit/deps")]),
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let interfaces = here.join("../interfaces");
    println!("cargo:rerun-if-changed=templates");
    println!("cargo:rerun-if-changed=../interfaces");
    let mut code = String::from("/// Every template `wash new component` knows.\npub const TEMPLATES: &[Template] = &[\n");
    for (name, description, wit) in TEMPLATES {
        let root = here.join("templates").join(name);
        let mut list = Vec::new();
        files(&root, &mut list);
        writeln!(code, "    Template {{ name: {name:?}, description: {description:?}, files: &[").expect("writing to a String");
        for path in &list {
            let rel = path.strip_prefix(&root).expect("inside").to_string_lossy().replace('\\', "/");
            // Stored without the dot, so that git and cargo leave the template alone.
            let rel = if rel == "gitignore" { ".gitignore".to_string() } else { rel };
            writeln!(code, "        ({rel:?}, include_str!({:?})),", path.display().to_string()).expect("writing to a String");
        }
        for (folder, dest) in *wit {
            let mut wits = Vec::new();
            files(&interfaces.join(folder), &mut wits);
            for path in wits.iter().filter(|p| p.extension().is_some_and(|e| e == "wit")) {
                let file = path.file_name().expect("file").to_string_lossy();
                writeln!(code, "        (\"{dest}/{file}\", include_str!({:?})),", path.canonicalize().expect("canonical").display().to_string())
                    .expect("writing to a String");
            }
        }
        code.push_str("    ] },\n");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("templates.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}
