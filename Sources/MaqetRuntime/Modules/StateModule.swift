import CLuaShim
import Foundation
import MaqetCore

/// The state database as a whole (not its rows: those are `maqet.db`): `maqet.backup_state()`,
/// and `maqet.data_dir()`, the data directory as the command resolved it (the one place scripts
/// learn it).
enum StateModule {
    static let functions: [LuaRegistration] = [
        ("backup_state", backupState),
        ("data_dir", dataDir),
    ]

    /// `maqet.data_dir()`: the data directory (holding instances.db and logs/), or
    /// `nil, message, "ENOSTATE"` when the command has not resolved one.
    private static let dataDir: LuaFunction = { L in
        Lua.call(L) { lua in
            guard let configuration = Runtime.from(lua).stateConfiguration else {
                return lua.fail("maqet.data_dir: this command has not opened the state database", code: "ENOSTATE")
            }
            lua.push(configuration.dataDirectory)
            return 1
        }
    }

    /// Takes an automatic, verified backup of instances.db beside it (`instances.db.backup-…`,
    /// pruned to the newest `$MAQET_KEEP_BACKUPS`, default 5) and returns its path. It copies what
    /// is committed, through a second connection: call it before `db:transaction`, not inside.
    static func backup(_ configuration: StateConfiguration) throws -> String {
        let reader = try Database(path: configuration.databasePath, mode: .readOnly, busyTimeoutMs: 10_000)
        defer { reader.close() }
        try Backups.checkFreeSpace(directory: configuration.dataDirectory, databasePath: configuration.databasePath, purpose: "back up the database")
        let path = try Backups.create(from: reader, directory: configuration.dataDirectory, kind: .automatic)
        Backups.prune(in: configuration.dataDirectory, keep: max(1, configuration.keepBackups)) // never the one just taken
        return path
    }

    /// `maqet.backup_state()`: the backup's path, or `nil, "maqet.backup_state: reason", code`
    /// (`"ENOSTATE"` when the command has no state database, `"EBACKUP"` when the copy failed).
    private static let backupState: LuaFunction = { L in
        Lua.call(L) { lua in
            guard let configuration = Runtime.from(lua).stateConfiguration else {
                return lua.fail("maqet.backup_state: this command has not opened the state database", code: "ENOSTATE")
            }
            do {
                lua.push(try backup(configuration))
                return 1
            } catch let error as MaqetError {
                return lua.fail("maqet.backup_state: \(error.message)", code: "EBACKUP")
            } catch {
                return lua.fail("maqet.backup_state: \(error)", code: "EBACKUP")
            }
        }
    }
}
