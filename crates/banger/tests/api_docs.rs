//! The curl examples in docs/api.md are run as written, so the documentation cannot rot.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::TestEnv;

fn example_block() -> String {
    let doc = include_str!("../../../docs/api.md");
    let start = doc
        .find("<!-- api-example:start -->")
        .expect("start marker in docs/api.md");
    let end = doc
        .find("<!-- api-example:end -->")
        .expect("end marker in docs/api.md");
    doc[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn curl_examples_in_api_docs_work() {
    let env = TestEnv::new();
    let f = env.fixture_files();
    env.register("dev", &f);

    let script = example_block();
    assert!(script.contains("curl"), "no example found:\n{script}");
    // One output line per curl: add newlines between the JSON documents.
    let script = script.replace("curl -s", "echo; curl -s");
    let mut cmd = Command::new("sh");
    cmd.args(["-ec", &script]);
    env.apply(&mut cmd);
    let out = cmd.output().expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(docs.len(), 3, "{text}");
    assert_eq!(docs[0]["ok"], true);
    assert_eq!(docs[1]["images"][0]["name"], "dev");
    assert_eq!(docs[2]["name"], "dev");
    assert_eq!(docs[2]["managed"], false);
}

/// The method table and the streaming heading of docs/api.md name only methods the
/// daemon registers, and the streaming ones are exactly those registered as streaming.
#[test]
fn documented_methods_match_the_registrations() {
    use banger_daemon::rpc::{self, Kind};

    let doc = include_str!("../../../docs/api.md");
    let methods = &doc[doc.find("## Methods").expect("methods section")..];
    let table = &methods[methods.find("\n|").expect("the methods table")..];
    let table = &table[..table.find("\n\n").expect("end of the table")];
    let documented: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    assert!(documented.len() > 10, "{documented:?}");
    for m in &documented {
        assert!(
            rpc::kind(m).is_some(),
            "docs/api.md documents {m}, unknown to the daemon"
        );
    }

    let heading = doc
        .lines()
        .find(|l| l.starts_with("## Streaming:"))
        .expect("streaming heading");
    let mut streaming_doc: Vec<&str> = heading.split('`').skip(1).step_by(2).collect();
    let mut streaming: Vec<&str> = rpc::known_methods()
        .into_iter()
        .filter(|m| rpc::kind(m) == Some(Kind::Streaming))
        .collect();
    streaming_doc.sort_unstable();
    streaming.sort_unstable();
    assert_eq!(
        streaming_doc, streaming,
        "the streaming methods in docs/api.md"
    );
}
