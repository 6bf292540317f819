fn main() -> std::process::ExitCode {
    ironic_agent::run()
}
