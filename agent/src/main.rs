fn main() -> std::process::ExitCode {
    fluxconfig_agent::cli::main()
}
