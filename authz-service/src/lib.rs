//! authz-service library (placeholder while the modules land).
