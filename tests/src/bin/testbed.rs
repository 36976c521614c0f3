fn main() -> std::process::ExitCode {
    fluxconfig_testbed::cli::main()
}
