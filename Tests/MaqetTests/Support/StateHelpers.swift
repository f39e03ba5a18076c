import Foundation
import MaqetCore
import XCTest

/// The package's root folder (for the shipped migrations/).
let packageRoot: String = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Columns of vm_instances at schema version 1.
let v1Columns = ["id", "name", "config_path", "config_data", "status", "pid", "socket_path", "created_at", "updated_at"]

/// Every listed column of every VM row, SQL-quoted (types and bytes visible), ordered by id.
func vmRows(_ path: String, columns: [String] = v1Columns) -> String {
    sqlite3(path, "SELECT " + columns.map { "quote(\($0))" }.joined(separator: " || '|' || ") + " FROM vm_instances ORDER BY id")
}

/// SHA-256 of a file's bytes.
func fileSHA(_ path: String) -> String {
    guard let data = FileManager.default.contents(atPath: path) else { return "missing" }
    return SHA256.hex([UInt8](data))
}

/// Full `.dump` through the sqlite3 CLI.
func dump(_ path: String) -> String {
    runProcess("/usr/bin/sqlite3", [path, ".dump"], environment: ProcessInfo.processInfo.environment).stdout
}

extension Sandbox {
    /// Files in the data directory whose names start with `prefix`.
    func dataFiles(_ prefix: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dataDir)) ?? []).filter { $0.hasPrefix(prefix) }.sorted()
    }

    var automaticBackups: [String] { dataFiles("instances.db.backup-") }
    var manualBackups: [String] { dataFiles("instances.db.manual-") }

    /// A copy of the shipped migrations/ in the sandbox, for editing; returns its path.
    func migrationsCopy(_ name: String = "migrations-copy") -> String {
        let target = root.file(name)
        try? FileManager.default.removeItem(atPath: target)
        try! FileManager.default.copyItem(atPath: (packageRoot as NSString).appendingPathComponent("migrations"), toPath: target)
        return target
    }

    /// Creates instances.db with the sqlite3 CLI from `sql`.
    func createDatabase(_ sql: String) {
        try? FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let result = runProcess("/usr/bin/sqlite3", [databasePath], environment: ProcessInfo.processInfo.environment, stdin: sql)
        XCTAssertEqual(result.code, 0, result.stderr)
    }

    func schemaVersion() -> String {
        sqlite3(databasePath, "SELECT value FROM schema_version").trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// The Python maqet's version-1 schema (as in the fixture) with its schema_version table.
let pythonV1Schema = """
    CREATE TABLE vm_instances (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE NOT NULL,
        config_path TEXT,
        config_data TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'created',
        pid INTEGER,
        socket_path TEXT,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
    );
    CREATE TABLE schema_version (
        version INTEGER PRIMARY KEY,
        applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        description TEXT
    );
    CREATE INDEX idx_vm_name ON vm_instances(name);
    CREATE INDEX idx_vm_status ON vm_instances(status);
    CREATE INDEX idx_vm_pid ON vm_instances(pid);
    CREATE TRIGGER update_timestamp
        AFTER UPDATE ON vm_instances
    BEGIN
        UPDATE vm_instances SET updated_at = CURRENT_TIMESTAMP
        WHERE id = NEW.id;
    END;
    INSERT INTO schema_version VALUES (1, '2025-01-01 10:00:00', 'Initial schema');

    """

/// Python maqet schema at `version` (1, 4, 5 or 6) with rows in every column it has.
func pythonSchema(version: Int) -> String {
    var sql = pythonV1Schema
    if version >= 2 {
        sql += """
            ALTER TABLE vm_instances ADD COLUMN runner_pid INTEGER;
            CREATE INDEX IF NOT EXISTS idx_vm_runner_pid ON vm_instances(runner_pid);
            INSERT INTO schema_version VALUES (2, '2025-02-01 10:00:00', 'Add runner_pid column');

            """
    }
    if version >= 3 {
        sql += """
            ALTER TABLE vm_instances ADD COLUMN auth_secret TEXT;
            INSERT INTO schema_version VALUES (3, '2025-02-01 10:00:01', 'Add auth_secret column');

            """
    }
    if version >= 4 {
        sql += """
            ALTER TABLE vm_instances DROP COLUMN auth_secret;
            INSERT INTO schema_version VALUES (4, '2025-02-01 10:00:02', 'Remove auth_secret column');

            """
    }
    if version >= 5 {
        sql += """
            ALTER TABLE vm_instances ADD COLUMN qmp_socket_path TEXT;
            CREATE INDEX IF NOT EXISTS idx_vms_qmp_socket ON vm_instances(qmp_socket_path);
            INSERT INTO schema_version VALUES (5, '2025-03-01 10:00:00', 'Add qmp_socket_path column');

            """
    }
    if version >= 6 {
        sql += """
            CREATE TABLE storage_registry (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                vm_name TEXT NOT NULL REFERENCES vm_instances(name) ON DELETE CASCADE,
                storage_path TEXT NOT NULL,
                storage_type TEXT NOT NULL,
                size_bytes INTEGER,
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                last_verified TIMESTAMP,
                UNIQUE(vm_name, storage_path)
            );
            CREATE INDEX IF NOT EXISTS idx_storage_vm ON storage_registry(vm_name);
            CREATE INDEX IF NOT EXISTS idx_storage_path ON storage_registry(storage_path);
            INSERT INTO schema_version VALUES (6, '2025-04-01 10:00:00', 'Add storage_registry table');

            """
    }
    let runner = version >= 2 ? ", runner_pid" : ""
    let qmp = version >= 5 ? ", qmp_socket_path" : ""
    sql += """
        INSERT INTO vm_instances (id, name, config_path, config_data, status, pid, socket_path, created_at, updated_at\(runner)\(qmp))
        VALUES ('id-1', 'one', '/cfg/one.yaml', '{"memory": "64M", "cpu": 2}', 'stopped', NULL, NULL, '2025-01-02 03:04:05', '2025-01-02 03:04:06'\(version >= 2 ? ", 4242" : "")\(version >= 5 ? ", '/run/one.qmp'" : ""));
        INSERT INTO vm_instances (id, name, config_path, config_data, status, pid, socket_path, created_at, updated_at\(runner)\(qmp))
        VALUES ('id-2', 'two', NULL, '{}', 'created', 77, '/run/two.sock', '2025-01-03 00:00:00', '2025-01-03 00:00:00'\(version >= 2 ? ", NULL" : "")\(version >= 5 ? ", NULL" : ""));

        """
    if version >= 6 {
        sql += "INSERT INTO storage_registry (vm_name, storage_path, storage_type, size_bytes, created_at) VALUES ('one', '/disks/one.qcow2', 'qcow2', 16777216, '2025-04-02 00:00:00');\n"
    }
    return sql
}

/// Columns vm_instances has at a Python schema version.
func pythonColumns(version: Int) -> [String] {
    v1Columns + (version >= 2 ? ["runner_pid"] : []) + (version >= 5 ? ["qmp_socket_path"] : [])
}
