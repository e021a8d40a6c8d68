import ArgumentParser

/// The key column's type, for the commands that open arbitrary tables.
enum KeyType: String, ExpressibleByArgument, CaseIterable {
    case integer
    case text
    case bytes
}
