//! `software/*`: one function report per package source present on the host.

pub mod apk;
pub mod dpkg;
pub mod flatpak;
pub mod pacman;
pub mod rpm;
pub mod snap;
