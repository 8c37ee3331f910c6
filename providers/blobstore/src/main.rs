//! The blobstore provider as a process: started by a host with `file://` (host data on stdin).

fn main() -> std::process::ExitCode {
    trellis_provider_sdk::run_process(trellis_provider_blobstore::NAME, trellis_provider_blobstore::run)
}
