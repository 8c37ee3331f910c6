//! `messaging-echo` (scaffold; being written).
