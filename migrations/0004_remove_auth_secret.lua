-- Secrets do not belong in the database: they live in ephemeral 0600 files in the runtime
-- directory instead. Drop the column (SQLite >= 3.35 supports ALTER TABLE ... DROP COLUMN).
return {
    description = "Remove auth_secret column (secrets live in ephemeral files)",
    up = function(db)
        if db:has_column("vm_instances", "auth_secret") then
            db:exec("ALTER TABLE vm_instances DROP COLUMN auth_secret")
        end
    end,
}
