import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet __runner --spec FILE [--ready-fd N]`: the detached per-VM runner that
    /// `maqet.runner.launch` starts. Not for people; hidden from --help.
    struct Runner: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "__runner",
            abstract: "Internal: the per-VM runner started by maqet.runner.launch.",
            shouldDisplay: false
        )

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: ArgumentHelp("The runner spec (JSON) written by maqet.runner.launch.", valueName: "file"))
        var spec: String

        @Option(name: .long, help: ArgumentHelp("Write the one-line ready report on this inherited descriptor.", valueName: "fd"))
        var readyFd: Int32?

        func run() throws {
            let status = VMRunner.main(specPath: spec, readyFD: readyFd, dataDir: global.maqetDataDir)
            if status != 0 { throw ExitCode(status) }
        }
    }
}
