//! The whole agent, with the site's manager compiled in. `image-build` can put this binary in
//! a ramdisk in place of the stock `ironic-agent`.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ironic_agent::run_with_managers(vec![Box::new(example_manager::SiteManager::default())])
}
