//! Page components. Each derives what it shows from the `HostStore`; none writes host state.

pub mod account;
pub mod actions;
pub mod add_host;
pub mod admin;
pub mod bulk_menu;
pub mod confirm;
pub mod dashboard;
pub mod deploy_panel;
pub mod fleet_target;
pub mod host_list;
pub mod host_parts;
pub mod host_row;
pub mod link_footer;
pub mod log_panel;
pub mod login;
pub mod menu;
pub mod notices;
pub mod viewer;
