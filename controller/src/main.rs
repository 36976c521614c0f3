fn main() -> std::process::ExitCode {
    fluxconfig_controller::cli::main()
}
