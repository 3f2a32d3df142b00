pub mod history;
pub mod images;
pub mod init;
pub mod local;
pub mod run;
pub mod simulate;
pub mod status;
pub mod validate;
