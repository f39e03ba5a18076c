import ArgumentParser
import Foundation
import MaqetRuntime

struct Maqet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maqet",
        abstract: "Manage QEMU virtual machines, with workflows and automation in Lua.",
        discussion: ExitStatus.helpText,
        version: MaqetVersion.string,
        // In the order a user meets them in --help; Runner (`maqet __runner`) is hidden.
        subcommands: [
            Add.self, Apply.self, Start.self, Stop.self, Pause.self, Resume.self, Reset.self, Status.self, Ls.self, Info.self,
            Inspect.self, Events.self, Console.self, Wait.self, Qmp.self, ShowCmd.self, Snapshot.self, Storage.self, Rm.self,
            Cleanup.self, Doctor.self, Run.self, Scripts.self, Db.self, Runner.self,
        ]
    )
}

@main
enum Main {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        // The runner is on every start's critical path: skip building the command tree for it
        // (about 4 ms of a 6 ms start-up). Anything unexpected goes through ArgumentParser.
        if arguments.first == Maqet.Runner.configuration.commandName, let status = Maqet.Runner.fastPath(Array(arguments.dropFirst())) {
            exit(status)
        }
        if let retired = retiredFlag(arguments) {
            exit(failure("\(retired.flag) is a flag of the published maqet: \(retired.instead)", .usage).rawValue)
        }
        if asksForVersion(arguments) {
            print(MaqetVersion.string)
            exit(0)
        }
        Maqet.main(reorderGlobalOptions(arguments, root: Maqet.self))
    }

    /// The first of the published maqet's retired global flags in the arguments (before `--`, and
    /// not among a `maqet run` script's own arguments).
    static func retiredFlag(_ arguments: [String]) -> (flag: String, instead: String)? {
        for argument in optionWords(arguments) {
            if let instead = GlobalOptions.retiredFlags[argument] { return (argument, instead) }
        }
        return nil
    }

    /// The arguments maqet itself reads: up to `--`, and for `maqet run` up to the script.
    static func optionWords(_ arguments: [String]) -> [String] {
        var words: [String] = []
        var inRun = false
        for argument in arguments {
            if argument == "--" { break }
            if !argument.hasPrefix("-") || argument == "-" { // `-`: a script on stdin
                if inRun { break } // `maqet run SCRIPT ARGS...`: what follows is the script's
                if argument == Maqet.Run.configuration.commandName { inRun = true }
            }
            words.append(argument)
        }
        return words
    }

    /// `-V` or `--version` anywhere, before or after the subcommand (the published maqet scanned
    /// for them the same way), but not after `--` nor among a `maqet run` script's own arguments.
    static func asksForVersion(_ arguments: [String]) -> Bool {
        optionWords(arguments).contains { $0 == "-V" || $0 == "--version" }
    }
}

/// Prints `message` on stderr and returns the exit code to throw.
func failure(_ message: String, _ status: ExitStatus = .failure) -> ExitCode {
    MaqetLog.appendToFile("error", message)
    FileHandle.standardError.write(Data(("maqet: " + message + "\n").utf8))
    return ExitCode(status.rawValue)
}

/// Turns an error from the runtime into a message on stderr and its documented exit code.
func exitCode(for error: Error) -> ExitCode {
    if let error = error as? ExitCode { return error }
    if let error = error as? MaqetError { return failure(error.message, error.status) }
    return failure(String(describing: error), .failure)
}
