import ArgumentParser
import Foundation
import MaqetCore
import MaqetRunner

extension Maqet {
    /// `maqet __runner --spec FILE [--ready-fd N] [--lock-fd N]`: the detached per-VM runner that
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

        @Option(name: .long, help: ArgumentHelp("The inherited descriptor holding the VM's lock (kept for the runner's life, passed to QEMU).", valueName: "fd"))
        var lockFd: Int32?

        /// `--spec FILE [--ready-fd N] [--lock-fd N] [--maqet-data-dir DIR]` exactly as `maqet.runner.launch`
        /// writes them, parsed without ArgumentParser; nil for anything else.
        static func fastPath(_ arguments: [String]) -> Int32? {
            var spec: String?, readyFD: Int32?, lockFD: Int32?, dataDir: String?
            var rest = arguments[...]
            while let option = rest.popFirst() {
                guard let value = rest.popFirst() else { return nil }
                switch option {
                case "--spec": spec = value
                case "--ready-fd": guard let fd = Int32(value) else { return nil }; readyFD = fd
                case "--lock-fd": guard let fd = Int32(value) else { return nil }; lockFD = fd
                case "--maqet-data-dir": dataDir = value
                default: return nil
                }
            }
            guard let spec else { return nil }
            return VMRunner.main(specPath: spec, readyFD: readyFD, lockFD: lockFD, dataDir: dataDir)
        }

        func run() throws {
            let status = VMRunner.main(specPath: spec, readyFD: readyFd, lockFD: lockFd, dataDir: global.maqetDataDir)
            if status != 0 { throw ExitCode(status) }
        }
    }
}
