//! Watch checker (placeholder until the watch workload lands).
