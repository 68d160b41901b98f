//! The cloud controller: not built yet. It will reconcile DeviceClass objects, sign and distribute
//! handler modules, and run staged rollouts (see the open issues and docs/architecture.md).
