import Foundation
import PackagePlugin

/// Embeds the package's `migrations/*.lua` and `scripts/**/*.lua` into the target as Swift source,
/// so a `maqet` binary copied alone still carries its migrations and workflows.
@main
struct EmbedLua: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let root = context.package.directory
        var inputs: [Path] = []
        for folder in ["migrations", "scripts"] {
            let dir = root.appending(folder)
            guard let walker = FileManager.default.enumerator(atPath: dir.string) else { continue }
            for case let relative as String in walker where relative.hasSuffix(".lua") {
                inputs.append(dir.appending(subpath: relative))
            }
        }
        inputs.sort { $0.string < $1.string }
        let output = context.pluginWorkDirectory.appending("EmbeddedLua.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(inputs.count) Lua files",
                executable: try context.tool(named: "maqet-embed").path,
                arguments: [output.string, root.string] + inputs.map(\.string),
                inputFiles: inputs,
                outputFiles: [output]
            ),
        ]
    }
}
