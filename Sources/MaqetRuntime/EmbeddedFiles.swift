/// The Lua files compiled into the binary (migrations/, scripts/), keyed by their path in the
/// package, e.g. "migrations/0002_add_runner_pid.lua".
public enum EmbeddedFiles {
    public static var all: [String: String] { EmbeddedLua.files }

    /// Files under `folder/` with their names relative to it, sorted by name.
    public static func files(under folder: String) -> [(name: String, text: String)] {
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        return EmbeddedLua.files
            .filter { $0.key.hasPrefix(prefix) }
            .map { (name: String($0.key.dropFirst(prefix.count)), text: $0.value) }
            .sorted { $0.name < $1.name }
    }
}
