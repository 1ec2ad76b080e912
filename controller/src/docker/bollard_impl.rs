//! The bollard implementation of [`super::DockerApi`] (being written; see the docker branch).
