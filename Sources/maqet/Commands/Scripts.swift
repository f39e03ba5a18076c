import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet scripts list`: which copy of each workflow script maqet uses.
    struct Scripts: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "scripts",
            abstract: "Show maqet's Lua workflow scripts and which copy of each is used.",
            discussion: """
                Workflows (scripts/lifecycle/*.lua) and their libraries (scripts/lib/*.lua) are Lua \
                you can change: copy one to $XDG_CONFIG_HOME/maqet/scripts/<same name> (or to a folder \
                given with --scripts-dir / $MAQET_SCRIPTS_DIR), edit it, and maqet uses your copy. \
                `maqet scripts show NAME` prints the built-in copy to start from.
                """,
            subcommands: [List.self, Show.self]
        )

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List every script with the copy in use (scripts-dir, user or built-in).")

            @OptionGroup var global: GlobalOptions

            @Option(name: .long, help: "Output format: text (a table), json or yaml.")
            var format: ReportFormat = .text

            func run() throws {
                let scripts = global.scriptLocator.all()
                if format != .text {
                    let items: [JSONValue] = scripts.map { script in
                        .object([
                            ("name", .string(script.name)),
                            ("origin", .string(script.origin.rawValue)),
                            ("path", script.path.map(JSONValue.string) ?? .null),
                        ])
                    }
                    JSONValue.array(items).printStructured(format)
                    return
                }
                guard !scripts.isEmpty else {
                    print("No workflow scripts.")
                    return
                }
                let width = max(4, scripts.map(\.name.count).max() ?? 0)
                print("NAME".padding(toLength: width, withPad: " ", startingAt: 0) + "   USED COPY")
                for script in scripts {
                    let where_ = script.path.map { "\(script.origin.rawValue): \($0)" } ?? "built-in"
                    print(script.name.padding(toLength: width, withPad: " ", startingAt: 0) + "   " + where_)
                }
            }
        }

        struct Show: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "show", abstract: "Print a script (the copy in use, or the built-in one with --built-in).")

            @OptionGroup var global: GlobalOptions

            @Flag(name: .long, help: "Print the built-in copy even when an edited copy overrides it.")
            var builtIn = false

            @Argument(help: ArgumentHelp("Script name as listed by 'maqet scripts list', e.g. lifecycle/start.lua.", valueName: "name"))
            var name: String

            func run() throws {
                let locator = builtIn ? ScriptLocator(scriptsDirOption: nil, environment: ["HOME": "/nonexistent", "XDG_CONFIG_HOME": "/nonexistent"]) : global.scriptLocator
                guard let script = locator.find(name) else {
                    throw failure("no script named '\(name)' (see 'maqet scripts list')", .notFound)
                }
                do {
                    FileHandle.standardOutput.write(Data(try script.text().utf8))
                } catch {
                    throw maqet.exitCode(for: error)
                }
            }
        }
    }
}
