//! # trellis-provider-keyvalue (scaffold; being written)
#![deny(missing_docs)]

use futures::future::BoxFuture;
use trellis_provider_sdk::{Builtin, ProviderContext, ProviderError};

/// The provider's name, as in `builtin://keyvalue`.
pub const NAME: &str = "keyvalue";

/// This provider as a host built-in.
pub fn builtin() -> Builtin {
    Builtin { name: NAME, run }
}

/// The provider's entry point.
pub fn run(ctx: ProviderContext) -> BoxFuture<'static, Result<(), ProviderError>> {
    Box::pin(async move {
        ctx.shutdown_requested().await;
        Ok(())
    })
}
