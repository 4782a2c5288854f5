//! Bad definitions files.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_permission_regex_stops_the_broker() {
    if skip_if_external("invalid_permission_regex_stops_the_broker") {
        return;
    }
    let files = TempDir::new();
    let base = || Defs::new().user("u", PW, &[]).vhost("v");
    let cases = [
        (
            "bad-permission.json",
            base().permit("u", "v", "^(unclosed", ".*", ".*"),
        ),
        (
            "bad-topic-permission.json",
            base().permit("u", "v", ".*", ".*", ".*").topic_permit(
                "u",
                "v",
                "amq.topic",
                "[a-",
                ".*",
            ),
        ),
    ];
    for (file, defs) in cases {
        let path = files.write(file, defs.json().as_bytes());
        let path = path.to_str().expect("UTF-8 temp path");
        let (status, output) = run_to_exit(&["--load-definitions", path], Duration::from_secs(30));
        let status =
            status.unwrap_or_else(|| panic!("{file}: the broker kept running; output:\n{output}"));
        assert!(
            !status.success(),
            "{file}: exit status {status}; output:\n{output}"
        );
        assert!(
            output.contains(path),
            "{file}: the error names the definitions file {path}; output:\n{output}"
        );
        assert!(
            !output.contains("amqp listening"),
            "{file}: the broker must not serve with half-imported definitions; output:\n{output}"
        );
    }
}
