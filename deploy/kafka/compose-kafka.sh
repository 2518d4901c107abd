#!/usr/bin/env bash
# The broker of `docker compose up`: the official apache/kafka image, configured as the local
# devstack's broker (deploy/devstack/kafka.py): SASL SCRAM-SHA-512 for clients, ACLs by KRaft's
# StandardAuthorizer, the superuser `admin` created when the storage is formatted.
set -euo pipefail
: "${CDT_KAFKA_ADMIN_PASSWORD:?the superuser's password}"
config=/opt/kafka/config/cdt-server.properties
jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"${CDT_KAFKA_ADMIN_PASSWORD}\";"
cat > "$config" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=BROKER://:9092,CONTROLLER://localhost:9093
advertised.listeners=BROKER://kafka:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=BROKER:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=BROKER
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.broker.scram-sha-512.sasl.jaas.config=${jaas}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs=/tmp/kraft-combined-logs
num.partitions=6
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.dedupe.buffer.size=8388608
PROPERTIES
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted -c "$config" \
    -t "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=${CDT_KAFKA_ADMIN_PASSWORD}]"
cat > /tmp/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=${jaas}
PROPERTIES
exec /opt/kafka/bin/kafka-server-start.sh "$config"
