import Foundation
import MaqetCore

/// One migration script: `NNNN_name.lua`, returning `{ description = "...", up = function(db) ... end }`
/// (or `up = "SQL"`). Its number is the schema version the database has once it has run.
public struct Migration {
    public let number: Int
    /// The file name without `.lua`, e.g. "0004_remove_auth_secret".
    public let name: String
    /// The file name, e.g. "0004_remove_auth_secret.lua".
    public let fileName: String
    /// What messages call the file: "migrations/0004_remove_auth_secret.lua" for the built-in copy,
    /// the real path for a `--migrations-dir` copy.
    public let displayPath: String
    private let readText: () throws -> String

    init(number: Int, name: String, fileName: String, displayPath: String, readText: @escaping () throws -> String) {
        self.number = number
        self.name = name
        self.fileName = fileName
        self.displayPath = displayPath
        self.readText = readText
    }

    /// The script's text.
    public func text() throws -> String { try readText() }

    /// The Lua chunk name, so errors read `migrations/0004_remove_auth_secret.lua:12: ...`.
    public var chunkName: String { "@" + displayPath }

    /// SHA-256 of the script with CRLF line ends turned into LF (so a checkout on Windows does not
    /// look edited).
    public func checksum() throws -> String { Self.checksum(of: try text()) }

    public static func checksum(of text: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var previousCR = false
        for byte in text.utf8 {
            if previousCR && byte != 0x0A { bytes.append(0x0D) }
            previousCR = byte == 0x0D
            if !previousCR { bytes.append(byte) }
        }
        if previousCR { bytes.append(0x0D) }
        return SHA256.hex(bytes)
    }
}

/// The ordered, validated list of migrations maqet knows: the copies built into the binary, or an
/// edited copy from `--migrations-dir` / `$MAQET_MIGRATIONS_DIR`. Listing needs file names only; a
/// script's text is read when it is about to run.
public struct MigrationSet {
    public let migrations: [Migration]
    /// Where they came from, for messages and the history's `source` column.
    public let source: String

    /// Highest migration number (the schema version a fully migrated database has).
    public var latestVersion: Int { migrations.last?.number ?? 0 }

    public func pending(after version: Int) -> [Migration] { migrations.filter { $0.number > version } }

    public func migration(number: Int) -> Migration? {
        guard number >= 1, number <= migrations.count else { return nil }
        return migrations[number - 1]
    }

    /// Loads the set named by the configuration.
    public static func load(_ configuration: StateConfiguration) throws -> MigrationSet {
        if let directory = configuration.migrationsDirectory { return try load(directory: directory) }
        return try builtIn()
    }

    public static func builtIn() throws -> MigrationSet {
        let files = EmbeddedFiles.files(under: "migrations")
        var texts: [String: String] = [:]
        for file in files { texts[file.name] = file.text }
        let names = files.map(\.name).filter { $0.hasSuffix(".lua") && !$0.contains("/") }
        return try validated(names: names, source: "built-in") { fileName in
            Migration.Parts(displayPath: "migrations/" + fileName) {
                guard let text = texts[fileName] else { throw MaqetError("migrations/\(fileName): missing from the binary") }
                return text
            }
        }
    }

    public static func load(directory: String) throws -> MigrationSet {
        let path = URL(fileURLWithPath: directory).standardizedFileURL.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw MaqetError("migrations directory \(path) does not exist", status: .notFound)
        }
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw MaqetError("cannot list migrations directory \(path): \(error.localizedDescription)")
        }
        let names = entries.filter { $0.hasSuffix(".lua") }
        return try validated(names: names, source: path) { fileName in
            let filePath = (path as NSString).appendingPathComponent(fileName)
            return Migration.Parts(displayPath: filePath) {
                guard let data = FileManager.default.contents(atPath: filePath) else {
                    throw MaqetError("\(filePath): cannot read the migration file", status: .notFound)
                }
                guard let text = String(data: data, encoding: .utf8) else {
                    throw MaqetError("\(filePath): not UTF-8 text")
                }
                return text
            }
        }
    }

    /// Parses `NNNN_name.lua` names; refuses malformed names, duplicate numbers and gaps.
    static func validated(names: [String], source: String, parts: (String) -> Migration.Parts) throws -> MigrationSet {
        let origin = source == "built-in" ? "built-in migrations" : "migrations directory \(source)"
        var byNumber: [Int: String] = [:]
        var migrations: [Migration] = []
        for fileName in names.sorted() {
            guard let (number, stem) = parseName(fileName) else {
                throw MaqetError("\(origin): \(fileName) is not named NNNN_name.lua (four or more digits, an underscore, letters, digits, '_' or '-')")
            }
            if let other = byNumber[number] {
                throw MaqetError("\(origin): \(other) and \(fileName) both have number \(String(format: "%04d", number)); each number must be used once")
            }
            byNumber[number] = fileName
            let p = parts(fileName)
            migrations.append(Migration(number: number, name: stem, fileName: fileName, displayPath: p.displayPath, readText: p.read))
        }
        migrations.sort { $0.number < $1.number }
        if migrations.isEmpty {
            throw MaqetError("\(origin): no migration files (NNNN_name.lua) found")
        }
        for (index, migration) in migrations.enumerated() where migration.number != index + 1 {
            let expected = String(format: "%04d", index + 1)
            let after = index > 0 ? " after \(migrations[index - 1].fileName)" : ""
            throw MaqetError("\(origin): migration \(expected) is missing\(after) (next is \(migration.fileName)); numbers must run 0001, 0002, ... without gaps")
        }
        return MigrationSet(migrations: migrations, source: source)
    }

    static func parseName(_ fileName: String) -> (Int, String)? {
        guard fileName.hasSuffix(".lua") else { return nil }
        let stem = String(fileName.dropLast(4))
        guard let underscore = stem.firstIndex(of: "_") else { return nil }
        let digits = stem[..<underscore]
        let rest = stem[stem.index(after: underscore)...]
        guard digits.count >= 4, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(digits), number > 0 else { return nil }
        guard !rest.isEmpty, rest.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) else { return nil }
        return (number, stem)
    }
}

extension Migration {
    struct Parts {
        var displayPath: String
        var read: () throws -> String
        init(displayPath: String, read: @escaping () throws -> String) {
            self.displayPath = displayPath
            self.read = read
        }
    }
}
