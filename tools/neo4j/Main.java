// mreg's Neo4j dev server: Neo4j 5 Community embedded, with its Bolt connector on loopback.
//
//   java -Xmx1g -cp 'tools/neo4j/lib/*' tools/neo4j/Main.java --data DIR --port PORT [--host 127.0.0.1]
//
// The libraries come from pom.xml (`mvn dependency:copy-dependencies -DoutputDirectory=lib`).
// Authentication is disabled: the server listens on loopback only and holds test data.
// Prints "mreg-neo4j ready host=... port=... version=..." once the database is up and the
// Bolt connector listens; stops cleanly on SIGTERM/SIGINT (shutdown hook).
// See "Accessing Neo4j embedded via the Bolt protocol" in Neo4j's Java reference.

import java.nio.file.Path;
import java.time.Duration;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.kernel.internal.Version;

public class Main {
    public static void main(String[] args) throws Exception {
        String host = "127.0.0.1";
        int port = 7687;
        Path data = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--data" -> data = Path.of(args[++i]);
                case "--port" -> port = Integer.parseInt(args[++i]);
                case "--host" -> host = args[++i];
                default -> {
                    System.err.println("mreg-neo4j: unknown argument " + args[i]);
                    System.exit(2);
                }
            }
        }
        if (data == null) {
            System.err.println("mreg-neo4j: --data DIR is required");
            System.exit(2);
        }

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(data.toAbsolutePath())
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress(host, port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress(host, port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, false)
                .setConfig(GraphDatabaseSettings.pagecache_memory, 64L * 1024 * 1024)
                .setConfig(GraphDatabaseSettings.shutdown_transaction_end_timeout, Duration.ofSeconds(2))
                .build();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("mreg-neo4j stopping");
            dbms.shutdown();
        }, "mreg-neo4j-shutdown"));

        GraphDatabaseService db = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
        while (!db.isAvailable(1000)) {
            System.out.println("mreg-neo4j waiting for the database");
        }
        System.out.println("mreg-neo4j ready host=" + host + " port=" + port + " version=" + Version.getNeo4jVersion());
        System.out.flush();
        Thread.currentThread().join();
    }
}
