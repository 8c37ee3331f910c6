//! The http-client provider as a process; the host starts it with host data on stdin.
fn main() -> std::process::ExitCode {
    trellis_provider_sdk::run_process(trellis_provider_http_client::NAME, trellis_provider_http_client::run)
}
