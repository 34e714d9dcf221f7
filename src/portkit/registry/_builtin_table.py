"""Built-in service table written for portkit: well-known network services and their ports.

One service per line: ``name | ports | protocols | category | commonness | description | risk``.
Names may carry aliases separated by ``/``. Ports are one port or one inclusive range.
Commonness runs from 1 (found open almost everywhere) to 5 (rare); it is portkit's own
estimate, used to rank ``top:N``. The last field is empty, or a risk note optionally
followed by `` -> `` and a safer alternative. Lines with an empty last field end in `` |``.
Lines starting with ``#`` are comments.
"""

# ruff: noqa: E501

TABLE: str = """
# ---------------------------------------------------------------- web
http/www | 80 | tcp | web | 1 | Hypertext Transfer Protocol: plain, unencrypted web pages and APIs | traffic and cookies readable and alterable in transit -> https on 443
https/http-tls | 443 | tcp,udp | web | 1 | HTTP over TLS for encrypted web traffic; the UDP side carries QUIC for HTTP/3 |
http-alt | 8080 | tcp | web | 2 | Second HTTP port for application servers, proxies and admin consoles | often an unencrypted admin or test service -> https on 443 via a reverse proxy
https-alt | 8443 | tcp | web | 2 | Second HTTPS port, used by application servers and management interfaces |
http-alt | 8000 | tcp | web | 2 | Common HTTP port for dev and app servers (Django, python -m http.server) | dev servers are not hardened -> bind to localhost or use a reverse proxy
http-alt | 8008 | tcp | web | 3 | Alternative HTTP port used by various appliances and application servers | unencrypted -> https
http-alt | 8888 | tcp | web | 3 | Alternative HTTP port, popular for proxies, notebooks and dashboards | unencrypted -> https
http-alt | 81 | tcp | web | 4 | Extra HTTP port seen on routers, cameras and secondary sites | unencrypted -> https
http-alt | 8081 | tcp | web | 3 | Alternative HTTP port for second instances, repositories and admin pages | unencrypted -> https
http-alt | 8082 | tcp | web | 4 | Alternative HTTP port for additional web services | unencrypted -> https
http-alt | 9080 | tcp | web | 4 | Alternative HTTP port used by application servers | unencrypted -> https
https-alt | 9443 | tcp | web | 4 | Alternative HTTPS port used by management consoles and application servers |
http-dev | 3000 | tcp | development | 2 | Default port of many development servers (Node.js, Next.js, Rails) | development servers are not hardened -> bind to localhost
http-dev | 5000 | tcp | development | 2 | Default port of Flask and other development web servers | development servers are not hardened -> bind to localhost
angular-dev | 4200 | tcp | development | 4 | Angular CLI development server | development server -> bind to localhost
vite | 5173 | tcp | development | 4 | Vite front-end development server | development server -> bind to localhost
webpack-dev-server | 8080 | tcp | development | 4 | webpack development server with live reload | development server -> bind to localhost
hugo | 1313 | tcp | development | 5 | Hugo static site generator preview server | development server -> bind to localhost
jekyll | 4000 | tcp | development | 5 | Jekyll static site generator preview server | development server -> bind to localhost
gatsby | 8000 | tcp | development | 5 | Gatsby development server | development server -> bind to localhost
parcel | 1234 | tcp | development | 5 | Parcel bundler development server | development server -> bind to localhost
livereload | 35729 | tcp | development | 5 | LiveReload browser refresh server used by build tools |
browsersync | 3001 | tcp | development | 5 | Browsersync control interface next to its dev server on 3000 | development server -> bind to localhost
storybook | 6006 | tcp | development | 5 | Storybook UI component explorer | development server -> bind to localhost
expo | 19000 | tcp | development | 5 | Expo (React Native) development server, older releases |
tomcat-ajp/ajp13 | 8009 | tcp | web | 3 | Apache JServ Protocol between a web front end and Tomcat | Ghostcat-style file read and inclusion when exposed -> disable or bind to localhost with a secret
tomcat-shutdown | 8005 | tcp | web | 5 | Tomcat shutdown command port, normally on localhost | anyone reaching it can stop the server -> keep on localhost or disable
weblogic | 7001 | tcp | web | 4 | Oracle WebLogic Server HTTP and T3 listener | frequent deserialization exploits -> patch and restrict access
weblogic-ssl | 7002 | tcp | web | 5 | Oracle WebLogic Server TLS listener | frequent deserialization exploits -> patch and restrict access
glassfish-admin | 4848 | tcp | web | 5 | GlassFish / Payara administration console | admin console with weak defaults -> restrict to management network
wildfly-mgmt/jboss-mgmt | 9990 | tcp | web | 5 | WildFly / JBoss EAP management console and API | admin access -> restrict to management network
websphere-admin | 9060 | tcp | web | 5 | IBM WebSphere administrative console over HTTP | cleartext admin -> 9043 over TLS, management network only
websphere-admin-ssl | 9043 | tcp | web | 5 | IBM WebSphere administrative console over HTTPS | admin access -> restrict to management network
caddy-admin | 2019 | tcp | web | 5 | Caddy admin API for live configuration, localhost by default | reconfigures the server without authentication -> keep on localhost
varnish-admin | 6082 | tcp | web | 5 | Varnish Cache management CLI | controls the cache -> localhost with a secret file
cpanel | 2082 | tcp | web | 4 | cPanel hosting control panel over HTTP | cleartext logins -> 2083 over TLS
cpanel-ssl | 2083 | tcp | web | 4 | cPanel hosting control panel over HTTPS | brute-force target -> restrict by IP, use 2FA
whm | 2086 | tcp | web | 4 | WebHost Manager (cPanel server admin) over HTTP | cleartext root-level logins -> 2087 over TLS
whm-ssl | 2087 | tcp | web | 4 | WebHost Manager (cPanel server admin) over HTTPS | root-level panel -> restrict by IP, use 2FA
plesk | 8443 | tcp | web | 4 | Plesk hosting control panel over HTTPS | brute-force target -> restrict by IP, use 2FA
plesk-http | 8880 | tcp | web | 5 | Plesk hosting control panel over HTTP | cleartext logins -> 8443 over TLS
directadmin | 2222 | tcp | web | 4 | DirectAdmin hosting control panel | brute-force target -> restrict by IP, use 2FA
webmin | 10000 | tcp | web | 4 | Webmin web-based system administration | root-level panel with a history of exploits -> restrict to management network or VPN
cockpit | 9090 | tcp | web | 4 | Cockpit web console for Linux servers | system login over the web -> restrict to management network
proxmox | 8006 | tcp | web | 4 | Proxmox VE web interface and API | hypervisor control -> restrict to management network
vmware-vami | 5480 | tcp | web | 5 | VMware appliance management interface (vCenter appliance) | appliance admin -> management network only
gopher | 70 | tcp | web | 5 | Gopher menu-based document retrieval, a pre-web protocol |
# ---------------------------------------------------------------- web proxies and anonymity
squid/http-proxy | 3128 | tcp | web | 3 | Squid and other forward HTTP proxies | open proxies get abused for relaying -> require authentication and restrict clients
socks | 1080 | tcp,udp | web | 3 | SOCKS proxy for relaying arbitrary TCP (and UDP with SOCKS5) | open proxies get abused -> require authentication and restrict clients
privoxy | 8118 | tcp | web | 5 | Privoxy filtering HTTP proxy, often in front of Tor | open proxy when bound widely -> bind to localhost
tor-socks | 9050 | tcp | web | 4 | Tor client SOCKS proxy | open proxy when bound widely -> bind to localhost
tor-browser-socks | 9150 | tcp | web | 5 | SOCKS proxy of the Tor Browser bundle |
tor-orport | 9001 | tcp | web | 4 | Tor relay port where other relays and clients connect |
tor-control | 9051 | tcp | web | 5 | Tor controller interface | controls the Tor process -> localhost with cookie or password auth
i2p-console | 7657 | tcp | web | 5 | I2P router web console | controls the router -> bind to localhost
i2p-http-proxy | 4444 | tcp | web | 5 | I2P HTTP proxy for browsing eepsites | open proxy when bound widely -> bind to localhost
shadowsocks | 8388 | tcp,udp | vpn | 5 | Shadowsocks encrypted proxy, common default port |
# ---------------------------------------------------------------- mail
smtp | 25 | tcp | mail | 2 | Simple Mail Transfer Protocol: mail delivery between servers | cleartext unless STARTTLS, open relays get abused -> STARTTLS, clients submit on 587 or 465
submission | 587 | tcp | mail | 2 | Mail submission from clients to their provider, with STARTTLS and login |
smtps/submissions | 465 | tcp | mail | 2 | Mail submission wrapped in TLS from the first byte |
pop3 | 110 | tcp | mail | 2 | Post Office Protocol 3: downloading mail from a mailbox | cleartext passwords -> pop3s on 995
pop3s | 995 | tcp | mail | 2 | POP3 inside TLS |
pop2 | 109 | tcp | mail | 5 | Post Office Protocol 2, long obsolete | cleartext passwords -> pop3s on 995
imap | 143 | tcp | mail | 2 | Internet Message Access Protocol: reading mailboxes kept on the server | cleartext passwords -> imaps on 993
imaps | 993 | tcp | mail | 2 | IMAP inside TLS |
lmtp | 24 | tcp | mail | 5 | Local Mail Transfer Protocol for final delivery, port 24 by Dovecot convention | no authentication -> keep on localhost or a unix socket
managesieve/sieve | 4190 | tcp | mail | 4 | ManageSieve: uploading server-side mail filter scripts |
nntp | 119 | tcp | mail | 4 | Network News Transfer Protocol for Usenet | cleartext logins -> nntps on 563
nntps | 563 | tcp | mail | 5 | NNTP inside TLS |
spamd | 783 | tcp | mail | 5 | SpamAssassin daemon scoring messages for spam | no authentication -> bind to localhost
clamd | 3310 | tcp | security | 5 | ClamAV antivirus daemon | can read files and be overloaded -> unix socket or localhost
lotus-notes/domino | 1352 | tcp | mail | 5 | IBM/HCL Notes and Domino client-server protocol |
zimbra-admin | 7071 | tcp | mail | 5 | Zimbra administration console | admin access -> restrict to management network
mailhog-smtp/mailpit-smtp | 1025 | tcp | development | 5 | SMTP catcher for development (MailHog, Mailpit) |
mailhog-web/mailpit-web | 8025 | tcp | development | 5 | Web inbox of development mail catchers (MailHog, Mailpit) | shows every captured mail -> bind to localhost
apple-push/apns | 5223 | tcp | messaging | 4 | Apple Push Notification service connections from devices |
# ---------------------------------------------------------------- file transfer and storage
ftp | 21 | tcp | file-transfer | 2 | File Transfer Protocol control channel | cleartext credentials and data -> sftp on 22 or ftps on 990
ftp-data | 20 | tcp | file-transfer | 3 | FTP data channel in active mode | cleartext data -> sftp on 22 or ftps on 990
ftps | 990 | tcp | file-transfer | 4 | FTP control channel inside TLS (implicit FTPS) |
ftps-data | 989 | tcp | file-transfer | 5 | FTP data channel inside TLS (implicit FTPS) |
sftp | 22 | tcp | file-transfer | 1 | SSH File Transfer Protocol, carried by an SSH server |
scp | 22 | tcp | file-transfer | 2 | Secure copy over an SSH connection |
tftp | 69 | udp | file-transfer | 3 | Trivial File Transfer Protocol: no login, used for network boot and device configs | anyone can fetch or overwrite files -> boot network only, read-only
rsync | 873 | tcp | file-transfer | 4 | rsync daemon for efficient file synchronisation | modules often readable without a password -> rsync over ssh
smb/microsoft-ds/cifs | 445 | tcp | file-transfer | 2 | SMB file and printer sharing over TCP (Windows, Samba) | wormable exploits, credential relaying -> never internet-facing, VPN only, no SMBv1
netbios-ssn | 139 | tcp | file-transfer | 2 | SMB over NetBIOS sessions (legacy Windows file sharing) | old SMB exposure and information leaks -> disable NetBIOS, use 445 inside the network only
nfs | 2049 | tcp,udp | file-transfer | 3 | Network File System shares | host-based trust is easy to spoof -> NFSv4 with Kerberos, restrict exports
mountd | 20048 | tcp,udp | file-transfer | 4 | NFS mount daemon, often pinned to 20048 on Linux | reveals exports -> firewall to clients
rpcbind/portmapper/sunrpc | 111 | tcp,udp | misc | 2 | ONC RPC port mapper telling clients where RPC services listen | exposes RPC services and is used for amplification -> firewall from the internet
afp/afpovertcp | 548 | tcp | file-transfer | 4 | Apple Filing Protocol file sharing | deprecated by Apple -> smb on 445 within the network
webdav | 80 | tcp | file-transfer | 4 | WebDAV file access over plain HTTP | cleartext credentials -> webdav over https on 443
webdavs | 443 | tcp | file-transfer | 3 | WebDAV file access over HTTPS (Nextcloud, SharePoint, ownCloud) |
uucp | 540 | tcp | file-transfer | 5 | Unix-to-Unix Copy, historical file and mail transfer | cleartext -> sftp
bittorrent | 6881-6889 | tcp,udp | file-transfer | 4 | BitTorrent peer connections, traditional port range |
gridftp | 2811 | tcp | file-transfer | 5 | GridFTP high-throughput transfer for scientific data |
aspera | 33001 | udp | file-transfer | 5 | IBM Aspera FASP fast file transfer |
syncthing | 22000 | tcp,udp | file-transfer | 4 | Syncthing device-to-device file synchronisation |
syncthing-discovery | 21027 | udp | file-transfer | 4 | Syncthing local network discovery broadcasts |
syncthing-gui | 8384 | tcp | file-transfer | 5 | Syncthing web interface, localhost by default | controls shared folders -> keep on localhost or set a password
seafile | 8082 | tcp | file-transfer | 5 | Seafile file server data port |
ipfs-swarm | 4001 | tcp,udp | file-transfer | 5 | IPFS peer-to-peer swarm connections |
ipfs-api | 5001 | tcp | file-transfer | 5 | IPFS (Kubo) RPC API | full node control without auth -> bind to localhost
ipfs-gateway | 8080 | tcp | file-transfer | 5 | IPFS HTTP gateway |
minio | 9000 | tcp | storage | 4 | MinIO S3-compatible object storage API | default credentials -> change keys, use TLS
minio-console | 9001 | tcp | storage | 4 | MinIO web console | admin access -> restrict to management network
iscsi | 3260 | tcp | storage | 4 | iSCSI block storage over IP | block devices readable without CHAP -> CHAP and a dedicated storage network
nbd | 10809 | tcp | storage | 5 | Network Block Device server | unauthenticated block access -> TLS and a storage network
ceph-mon | 6789 | tcp | storage | 5 | Ceph monitor, legacy messenger v1 |
ceph-mon-v2 | 3300 | tcp | storage | 5 | Ceph monitor, messenger v2 protocol |
ceph-osd | 6800-7300 | tcp | storage | 5 | Ceph OSD and manager daemons |
glusterfs | 24007 | tcp | storage | 5 | GlusterFS management daemon |
hdfs-namenode | 8020 | tcp | storage | 5 | Hadoop HDFS NameNode RPC | no auth without Kerberos -> enable Kerberos, restrict network
hdfs-namenode-web | 9870 | tcp | storage | 5 | Hadoop HDFS NameNode web UI (Hadoop 3) | browse files without auth -> restrict network
hdfs-datanode-web | 9864 | tcp | storage | 5 | Hadoop HDFS DataNode web UI (Hadoop 3) |
hdfs-datanode | 9866 | tcp | storage | 5 | Hadoop HDFS DataNode data transfer (Hadoop 3) |
azurite-blob | 10000 | tcp | development | 5 | Azurite local Azure Storage emulator, blob service |
azurite-queue | 10001 | tcp | development | 5 | Azurite local Azure Storage emulator, queue service |
azurite-table | 10002 | tcp | development | 5 | Azurite local Azure Storage emulator, table service |
# ---------------------------------------------------------------- remote access
ssh | 22 | tcp | remote-access | 1 | Secure Shell: encrypted remote login, command execution and tunnelling | constant password guessing -> key-only authentication, rate limiting
ssh-alt | 2222 | tcp | remote-access | 3 | Non-standard SSH port, also used by containers and appliances | password guessing -> key-only authentication
telnet | 23 | tcp | remote-access | 2 | Telnet interactive terminal sessions | cleartext logins, heavily scanned by botnets -> ssh on 22
telnets | 992 | tcp | remote-access | 5 | Telnet inside TLS |
rdp/ms-wbt-server/remote-desktop | 3389 | tcp,udp | remote-access | 2 | Remote Desktop Protocol for Windows desktops, UDP for faster transport | brute-forced and exploited -> VPN or RD Gateway only
vnc/rfb | 5900 | tcp | remote-access | 2 | Virtual Network Computing remote desktop, display :0 | weak or no passwords, often unencrypted -> only behind a VPN or SSH tunnel
vnc/rfb | 5901-5903 | tcp | remote-access | 3 | VNC remote desktop, displays :1 to :3 | weak or no passwords, often unencrypted -> only behind a VPN or SSH tunnel
vnc-http | 5800 | tcp | remote-access | 4 | Browser-based VNC viewer (Java or HTML) | weak passwords -> only behind a VPN or SSH tunnel
x11 | 6000-6063 | tcp | remote-access | 4 | X Window System display server connections | open displays allow keystroke capture -> ssh X11 forwarding
xdmcp | 177 | udp | remote-access | 5 | X Display Manager Control Protocol for remote graphical logins | cleartext, no encryption -> ssh forwarding or a VPN
rexec/exec | 512 | tcp | remote-access | 5 | Remote execution (BSD r-service) | cleartext passwords -> ssh on 22
rlogin/login | 513 | tcp | remote-access | 5 | Remote login (BSD r-service) with host-based trust | trust is spoofable, cleartext -> ssh on 22
rsh/shell | 514 | tcp | remote-access | 5 | Remote shell (BSD r-service) with host-based trust | trust is spoofable, cleartext -> ssh on 22
mosh | 60000-61000 | udp | remote-access | 4 | Mosh mobile shell sessions, started over SSH |
teamviewer | 5938 | tcp,udp | remote-access | 3 | TeamViewer remote support connections | account takeover gives full desktop control -> 2FA, allow-lists, unattended access off
anydesk | 7070 | tcp | remote-access | 4 | AnyDesk direct connections on the local network | scam and account-takeover abuse -> restrict unattended access, allow-lists
anydesk-relay | 6568 | tcp | remote-access | 4 | AnyDesk connections to its relay network |
rustdesk | 21115-21119 | tcp | remote-access | 5 | RustDesk self-hosted ID and relay servers (hbbs, hbbr) |
rustdesk | 21116 | udp | remote-access | 5 | RustDesk ID server hole punching and registration |
radmin | 4899 | tcp | remote-access | 4 | Radmin remote control | brute-forced -> only behind a VPN
dameware | 6129 | tcp | remote-access | 5 | DameWare Mini Remote Control | exploited in the past -> only behind a VPN
pcanywhere-data | 5631 | tcp | remote-access | 5 | Symantec pcAnywhere data channel, discontinued | unpatched, discontinued product -> supported remote desktop behind a VPN
pcanywhere-status | 5632 | udp | remote-access | 5 | Symantec pcAnywhere status and discovery, discontinued | unpatched, discontinued product -> supported remote desktop behind a VPN
apple-remote-desktop/ard | 3283 | tcp,udp | remote-access | 4 | Apple Remote Desktop management | UDP side used for reflection attacks -> firewall from the internet
citrix-ica | 1494 | tcp | remote-access | 4 | Citrix ICA sessions to virtual apps and desktops | exposure invites exploits -> Citrix Gateway on 443
citrix-cgp | 2598 | tcp | remote-access | 4 | Citrix session reliability (Common Gateway Protocol) |
nomachine/nx | 4000 | tcp | remote-access | 5 | NoMachine remote desktop |
guacd | 4822 | tcp | remote-access | 5 | Apache Guacamole proxy daemon behind the web front end | no auth of its own -> keep on localhost or a private network
winrm/wsman | 5985 | tcp | remote-access | 3 | Windows Remote Management and PowerShell remoting over HTTP | remote command execution target -> 5986 over HTTPS, management network only
winrm-https/wsmans | 5986 | tcp | remote-access | 4 | Windows Remote Management and PowerShell remoting over HTTPS | remote command execution target -> management network only
ipmi/asf-rmcp | 623 | udp | remote-access | 4 | IPMI / BMC out-of-band server management (RMCP) | password hash disclosure and cipher 0 flaws -> isolated management network
vmware-authd | 902 | tcp,udp | remote-access | 4 | VMware ESXi/Workstation authentication and remote console | hypervisor access -> management network only
libvirt | 16509 | tcp | remote-access | 5 | libvirt remote management without TLS | VM control -> 16514 with TLS or qemu+ssh
libvirt-tls | 16514 | tcp | remote-access | 5 | libvirt remote management over TLS |
# ---------------------------------------------------------------- databases
mysql | 3306 | tcp | database | 2 | MySQL client-server protocol | brute-forced and leaked when public -> bind to localhost or private network, require TLS
mariadb | 3306 | tcp | database | 2 | MariaDB client-server protocol (MySQL compatible) | brute-forced and leaked when public -> bind to localhost or private network, require TLS
mysqlx | 33060 | tcp | database | 4 | MySQL X Protocol for the document store and MySQL Shell | database exposure -> private network only
galera | 4567 | tcp,udp | database | 5 | Galera Cluster replication between MariaDB/MySQL nodes | cluster traffic -> private network only
galera-ist | 4568 | tcp | database | 5 | Galera incremental state transfer |
galera-sst | 4444 | tcp | database | 5 | Galera full state snapshot transfer |
mysql-cluster-mgm/ndb | 1186 | tcp | database | 5 | MySQL NDB Cluster management server |
postgresql/postgres | 5432 | tcp | database | 2 | PostgreSQL database server | brute-forced when public -> private network, scram-sha-256 auth, TLS
pgbouncer | 6432 | tcp | database | 4 | PgBouncer connection pooler for PostgreSQL | database exposure -> private network only
yugabyte-ysql | 5433 | tcp | database | 5 | YugabyteDB PostgreSQL-compatible API | database exposure -> private network only
mssql/ms-sql-s | 1433 | tcp | database | 2 | Microsoft SQL Server database engine | brute-forced, sa account attacks -> private network, Windows auth, encryption
mssql-browser/ms-sql-m | 1434 | udp | database | 3 | SQL Server Browser answering which instances listen where | information leak and reflection -> firewall from the internet
mssql-analysis/ssas | 2383 | tcp | database | 5 | SQL Server Analysis Services |
oracle/oracle-tns | 1521 | tcp | database | 3 | Oracle Database TNS listener | listener attacks and default accounts -> private network, native encryption or TCPS
oracle-tcps | 2484 | tcp | database | 5 | Oracle Database listener over TLS |
oracle-ttc | 2483 | tcp | database | 5 | Oracle Database listener, IANA-assigned cleartext port | unencrypted -> 2484 with TLS
oracle-em-express | 5500 | tcp | database | 5 | Oracle Enterprise Manager Express web console | admin console -> management network only
mongodb | 27017 | tcp | database | 3 | MongoDB document database | mass data theft from instances without auth -> enable auth, bind to localhost, firewall
mongodb-shard | 27018 | tcp | database | 5 | MongoDB shard server (mongod with --shardsvr) | never expose without auth -> private network with auth
mongodb-config | 27019 | tcp | database | 5 | MongoDB config server in a sharded cluster | never expose without auth -> private network with auth
cassandra-cql | 9042 | tcp | database | 4 | Apache Cassandra native CQL clients (also ScyllaDB) | default cassandra/cassandra login -> authentication and private network
cassandra-internode | 7000 | tcp | database | 5 | Apache Cassandra gossip and internode traffic | cluster traffic -> private network, internode TLS
cassandra-internode-tls | 7001 | tcp | database | 5 | Apache Cassandra internode traffic over TLS (older releases) |
cassandra-jmx | 7199 | tcp | database | 5 | Apache Cassandra JMX monitoring and nodetool | remote code risks through JMX -> localhost or authenticated JMX
cassandra-thrift | 9160 | tcp | database | 5 | Apache Cassandra legacy Thrift client API | removed in Cassandra 4 -> use CQL on 9042
couchdb | 5984 | tcp | database | 4 | Apache CouchDB HTTP API | admin party and exploits on old versions -> set admins, private network
couchdb-https | 6984 | tcp | database | 5 | Apache CouchDB HTTP API over TLS |
couchbase | 8091-8096 | tcp | database | 5 | Couchbase Server web console, REST, views, query, search, analytics and eventing | admin console -> private network only
couchbase-data | 11210 | tcp | database | 5 | Couchbase Server key-value data service |
couchbase-data-tls | 11207 | tcp | database | 5 | Couchbase Server key-value data service over TLS |
neo4j-http | 7474 | tcp | database | 4 | Neo4j browser and HTTP API | default neo4j/neo4j credentials -> change password, private network
neo4j-https | 7473 | tcp | database | 5 | Neo4j browser and HTTP API over TLS |
neo4j-bolt | 7687 | tcp | database | 4 | Neo4j Bolt binary protocol for drivers | database exposure -> private network, TLS
influxdb | 8086 | tcp | database | 4 | InfluxDB HTTP API for time series | writes and reads without auth on 1.x defaults -> enable auth and TLS
influxdb-rpc | 8088 | tcp | database | 5 | InfluxDB 1.x backup and restore RPC | unauthenticated backups -> bind to localhost
clickhouse-http | 8123 | tcp | database | 4 | ClickHouse HTTP interface | default user without password -> set passwords, private network
clickhouse-native | 9000 | tcp | database | 4 | ClickHouse native client protocol | default user without password -> set passwords, private network
clickhouse-native-tls | 9440 | tcp | database | 5 | ClickHouse native client protocol over TLS |
clickhouse-interserver | 9009 | tcp | database | 5 | ClickHouse replica data exchange |
cockroachdb | 26257 | tcp | database | 5 | CockroachDB SQL and inter-node traffic | database exposure -> secure mode with certificates
cockroachdb-ui | 8080 | tcp | database | 5 | CockroachDB DB Console |
db2 | 50000 | tcp | database | 4 | IBM Db2 default instance port | database exposure -> private network, TLS
ibm-db2 | 523 | tcp,udp | database | 5 | IBM Db2 administration server and discovery | information leak -> firewall from the internet
firebird/gds-db | 3050 | tcp | database | 5 | Firebird and InterBase database server | default SYSDBA password -> change it, private network
sybase | 5000 | tcp | database | 5 | SAP (Sybase) Adaptive Server Enterprise default port | database exposure -> private network
informix/sqlexec | 9088 | tcp | database | 5 | IBM Informix database server |
sap-hana | 30015 | tcp | database | 5 | SAP HANA SQL port for instance 00 (pattern 3NN15) | database exposure -> private network, TLS
riak-pb | 8087 | tcp | database | 5 | Riak KV protocol buffers client API |
riak-http | 8098 | tcp | database | 5 | Riak KV HTTP API |
rethinkdb | 28015 | tcp | database | 5 | RethinkDB client driver port |
rethinkdb-cluster | 29015 | tcp | database | 5 | RethinkDB intra-cluster traffic |
arangodb | 8529 | tcp | database | 5 | ArangoDB HTTP API and web interface | database exposure -> authentication, private network
orientdb-binary | 2424 | tcp | database | 5 | OrientDB binary protocol |
orientdb-http | 2480 | tcp | database | 5 | OrientDB HTTP API and studio |
hbase-master | 16000 | tcp | database | 5 | Apache HBase master RPC |
hbase-master-web | 16010 | tcp | database | 5 | Apache HBase master web UI |
hiveserver2 | 10000 | tcp | database | 5 | Apache Hive HiveServer2 Thrift service |
trino/presto | 8080 | tcp | database | 5 | Trino / Presto coordinator HTTP API |
druid-router | 8888 | tcp | database | 5 | Apache Druid router and web console |
tidb | 4000 | tcp | database | 5 | TiDB MySQL-compatible SQL port |
foundationdb | 4500 | tcp | database | 5 | FoundationDB server process default port |
questdb | 9000 | tcp | database | 5 | QuestDB web console and REST API |
questdb-pg | 8812 | tcp | database | 5 | QuestDB PostgreSQL wire protocol |
dgraph-alpha | 8080 | tcp | database | 5 | Dgraph alpha HTTP API |
dgraph-grpc | 9080 | tcp | database | 5 | Dgraph alpha gRPC API |
qdrant | 6333 | tcp | database | 5 | Qdrant vector database HTTP API | no auth by default -> API key, private network
qdrant-grpc | 6334 | tcp | database | 5 | Qdrant vector database gRPC API |
milvus | 19530 | tcp | database | 5 | Milvus vector database gRPC API |
solr | 8983 | tcp | database | 4 | Apache Solr search server | admin API abuse and old RCEs -> authentication, private network
elasticsearch | 9200 | tcp | database | 3 | Elasticsearch REST API | frequent data leaks from open clusters -> enable security, never expose without auth
elasticsearch-transport | 9300 | tcp | database | 4 | Elasticsearch node-to-node transport | cluster traffic -> private network, TLS
opensearch | 9200 | tcp | database | 4 | OpenSearch REST API | open clusters leak data -> security plugin with auth, private network
opensearch-transport | 9300 | tcp | database | 5 | OpenSearch node-to-node transport |
meilisearch | 7700 | tcp | database | 5 | Meilisearch search engine API | no master key in development mode -> set a master key
typesense | 8108 | tcp | database | 5 | Typesense search engine API |
sphinx | 9312 | tcp | database | 5 | Sphinx / Manticore Search native API |
sphinxql | 9306 | tcp | database | 5 | Sphinx / Manticore Search MySQL-protocol queries |
h2 | 9092 | tcp | database | 5 | H2 database TCP server | remote code execution via console and open server -> localhost only
derby | 1527 | tcp | database | 5 | Apache Derby network server |
voltdb | 21212 | tcp | database | 5 | VoltDB client port |
aerospike | 3000 | tcp | database | 5 | Aerospike client service port |
aerospike-cluster | 3001-3003 | tcp | database | 5 | Aerospike heartbeat, fabric and info ports |
sap-dispatcher | 3200 | tcp | database | 5 | SAP dispatcher for SAP GUI, instance 00 (pattern 32NN) | business system exposure -> SAProuter or VPN
saprouter | 3299 | tcp | database | 5 | SAProuter application-level gateway |
# ---------------------------------------------------------------- caches, key-value stores, queues
redis | 6379 | tcp | cache | 3 | Redis in-memory data store | no auth by default, abused to write files and run code -> bind to localhost, requirepass or ACLs
redis-sentinel | 26379 | tcp | cache | 5 | Redis Sentinel failover monitor | never expose without auth -> private network, auth
redis-cluster-bus | 16379 | tcp | cache | 5 | Redis Cluster node-to-node bus (client port plus 10000) |
memcached | 11211 | tcp,udp | cache | 3 | memcached in-memory cache | no auth; UDP used for huge reflection attacks -> bind to localhost, disable UDP
hazelcast | 5701 | tcp | cache | 5 | Hazelcast in-memory data grid member | cluster exposure -> private network, TLS
ignite-thin | 10800 | tcp | cache | 5 | Apache Ignite thin client and JDBC/ODBC |
ignite-discovery | 47500 | tcp | cache | 5 | Apache Ignite node discovery |
ignite-communication | 47100 | tcp | cache | 5 | Apache Ignite node communication |
amqp/rabbitmq | 5672 | tcp | messaging | 3 | AMQP message broker clients (RabbitMQ, Qpid, ActiveMQ) | default guest account -> remove guest, use TLS on 5671
amqps | 5671 | tcp | messaging | 4 | AMQP over TLS |
rabbitmq-management | 15672 | tcp | messaging | 3 | RabbitMQ management web UI and HTTP API | default guest/guest on old setups -> remove guest, restrict access
rabbitmq-dist | 25672 | tcp | messaging | 5 | RabbitMQ inter-node and CLI tool communication | Erlang cookie exposure gives code execution -> private network
rabbitmq-stream | 5552 | tcp | messaging | 5 | RabbitMQ Streams protocol |
rabbitmq-prometheus | 15692 | tcp | monitoring | 5 | RabbitMQ Prometheus metrics endpoint |
rabbitmq-web-stomp | 15674 | tcp | messaging | 5 | RabbitMQ STOMP over WebSocket |
rabbitmq-web-mqtt | 15675 | tcp | messaging | 5 | RabbitMQ MQTT over WebSocket |
epmd | 4369 | tcp | messaging | 4 | Erlang Port Mapper Daemon used by RabbitMQ, CouchDB and other Erlang systems | reveals Erlang nodes, cookie attacks -> private network
kafka | 9092 | tcp | messaging | 3 | Apache Kafka broker clients (also Redpanda) | no auth by default -> SASL and TLS, private network
kafka-tls | 9093 | tcp | messaging | 4 | Apache Kafka broker, conventional TLS listener |
kafka-connect | 8083 | tcp | messaging | 5 | Kafka Connect REST API | can be abused to run connectors -> authentication, private network
kafka-schema-registry | 8081 | tcp | messaging | 5 | Confluent Schema Registry |
kafka-rest | 8082 | tcp | messaging | 5 | Confluent REST Proxy for Kafka |
ksqldb | 8088 | tcp | messaging | 5 | ksqlDB server |
zookeeper | 2181 | tcp | messaging | 4 | Apache ZooKeeper client port | leaks configuration without auth -> SASL, private network
zookeeper-peer | 2888 | tcp | messaging | 5 | ZooKeeper follower-to-leader traffic |
zookeeper-election | 3888 | tcp | messaging | 5 | ZooKeeper leader election |
nats | 4222 | tcp | messaging | 4 | NATS messaging clients |
nats-cluster | 6222 | tcp | messaging | 5 | NATS cluster routing between servers |
nats-monitor | 8222 | tcp | monitoring | 5 | NATS HTTP monitoring endpoint |
nats-leafnode | 7422 | tcp | messaging | 5 | NATS leaf node connections |
mqtt | 1883 | tcp | iot | 3 | MQTT publish/subscribe messaging for IoT | often no auth and cleartext -> mqtts on 8883 with credentials
mqtts/secure-mqtt | 8883 | tcp | iot | 4 | MQTT over TLS |
emqx-dashboard | 18083 | tcp | iot | 5 | EMQX MQTT broker dashboard | default admin/public -> change password, restrict access
activemq | 61616 | tcp | messaging | 4 | Apache ActiveMQ OpenWire broker port (also Artemis) | deserialization RCE on unpatched brokers -> patch, private network
activemq-console | 8161 | tcp | messaging | 4 | Apache ActiveMQ web console | default admin/admin -> change credentials, restrict access
stomp | 61613 | tcp | messaging | 5 | STOMP text messaging protocol (ActiveMQ, RabbitMQ) |
zeromq | 5555 | tcp | messaging | 5 | ZeroMQ sockets: no registered port, 5555 is the conventional example | no auth by default -> CURVE security, private network
pulsar | 6650 | tcp | messaging | 5 | Apache Pulsar binary protocol |
pulsar-tls | 6651 | tcp | messaging | 5 | Apache Pulsar binary protocol over TLS |
nsqd | 4150 | tcp | messaging | 5 | NSQ daemon TCP clients |
nsqd-http | 4151 | tcp | messaging | 5 | NSQ daemon HTTP API |
nsqlookupd | 4160 | tcp | messaging | 5 | NSQ lookup daemon TCP |
nsqlookupd-http | 4161 | tcp | messaging | 5 | NSQ lookup daemon HTTP API |
beanstalkd | 11300 | tcp | messaging | 5 | beanstalkd work queue | no auth -> bind to localhost
gearman | 4730 | tcp | messaging | 5 | Gearman job server | no auth -> private network
ibm-mq | 1414 | tcp | messaging | 5 | IBM MQ queue manager listener | channel auth gaps -> TLS channels and CHLAUTH rules
tibco-ems | 7222 | tcp | messaging | 5 | TIBCO Enterprise Message Service |
rocketmq-nameserver | 9876 | tcp | messaging | 5 | Apache RocketMQ name server | unauthenticated config changes -> private network, ACLs
rocketmq-broker | 10911 | tcp | messaging | 5 | Apache RocketMQ broker |
celery-flower | 5555 | tcp | monitoring | 5 | Flower monitoring UI for Celery task queues | task control without auth -> basic auth, private network
# ---------------------------------------------------------------- chat and messaging
irc | 6667 | tcp | messaging | 4 | Internet Relay Chat, cleartext | cleartext, also used by botnets -> ircs on 6697
irc | 194 | tcp | messaging | 5 | Internet Relay Chat on its official but rarely used port | cleartext -> ircs on 6697
ircs | 6697 | tcp | messaging | 4 | Internet Relay Chat over TLS |
xmpp-client/jabber | 5222 | tcp | messaging | 4 | XMPP (Jabber) client connections with STARTTLS |
xmpp-client-tls | 5223 | tcp | messaging | 5 | XMPP client connections with direct TLS |
xmpp-server | 5269 | tcp | messaging | 4 | XMPP server-to-server federation |
xmpp-bosh | 5280 | tcp | messaging | 5 | XMPP over HTTP (BOSH) and WebSocket |
matrix-federation | 8448 | tcp | messaging | 4 | Matrix server-to-server federation |
matrix-synapse | 8008 | tcp | messaging | 5 | Matrix Synapse client API listener, usually behind a reverse proxy |
mattermost | 8065 | tcp | messaging | 5 | Mattermost team chat server |
rocketchat | 3000 | tcp | messaging | 5 | Rocket.Chat team chat server |
aim/icq/oscar | 5190 | tcp | messaging | 5 | AOL Instant Messenger and ICQ (OSCAR protocol), historical |
# ---------------------------------------------------------------- directory and authentication
ldap | 389 | tcp,udp | directory | 2 | Lightweight Directory Access Protocol (UDP for connectionless CLDAP) | cleartext binds, CLDAP reflection -> ldaps on 636 or StartTLS, block UDP at the edge
ldaps | 636 | tcp | directory | 3 | LDAP inside TLS |
globalcatalog/gc | 3268 | tcp | directory | 3 | Active Directory global catalog over LDAP | cleartext binds -> 3269 over TLS
globalcatalog-ssl/gc-ssl | 3269 | tcp | directory | 4 | Active Directory global catalog over LDAP with TLS |
kerberos/kerberos5 | 88 | tcp,udp | auth | 2 | Kerberos ticket service (Active Directory, MIT, Heimdal) | roasting attacks against weak service passwords -> strong service account passwords, AES only
kpasswd | 464 | tcp,udp | auth | 3 | Kerberos password changes |
kerberos-adm/kadmin | 749 | tcp | auth | 5 | Kerberos administration (MIT kadmind) | realm administration -> restrict to admin hosts
radius | 1812 | udp | auth | 3 | RADIUS authentication for network access | MD5-based shared secret, Blast-RADIUS forgery -> RadSec on 2083 or Message-Authenticator
radius-acct | 1813 | udp | auth | 4 | RADIUS accounting |
radius-legacy | 1645 | udp | auth | 5 | RADIUS authentication on the pre-standard port | same weaknesses as RADIUS -> 1812 with Message-Authenticator, or RadSec
radius-acct-legacy | 1646 | udp | auth | 5 | RADIUS accounting on the pre-standard port |
radsec | 2083 | tcp | auth | 5 | RADIUS over TLS |
tacacs/tacacs-plus | 49 | tcp | auth | 4 | TACACS+ device administration AAA | body obfuscation only, weak -> TACACS+ over TLS, management network
diameter | 3868 | tcp,sctp | auth | 5 | Diameter AAA for mobile and telecom networks |
ident/auth | 113 | tcp | auth | 4 | Ident protocol: which user owns a TCP connection | leaks user names -> disable unless an IRC server needs it
keycloak | 8080 | tcp | auth | 5 | Keycloak identity provider HTTP listener | admin console exposure -> https on 8443, restrict /admin
keycloak-https | 8443 | tcp | auth | 5 | Keycloak identity provider HTTPS listener |
vault | 8200 | tcp | security | 4 | HashiCorp Vault API and UI |
vault-cluster | 8201 | tcp | security | 5 | HashiCorp Vault server-to-server cluster traffic |
# ---------------------------------------------------------------- windows networking
msrpc/epmap | 135 | tcp,udp | misc | 2 | Microsoft RPC endpoint mapper (DCOM, WMI, AD) | lateral movement and worm history -> firewall from the internet
netbios-ns | 137 | udp | misc | 2 | NetBIOS name service | name poisoning and information leaks -> disable NetBIOS over TCP/IP, block at the edge
netbios-dgm | 138 | udp | misc | 3 | NetBIOS datagram service (browser announcements) | information leaks -> disable NetBIOS over TCP/IP, block at the edge
wins | 42 | tcp | directory | 5 | Windows Internet Name Service replication | legacy name service -> dns
http-rpc-epmap | 593 | tcp | misc | 4 | Microsoft RPC over HTTP endpoint mapper |
adws | 9389 | tcp | directory | 4 | Active Directory Web Services (PowerShell AD module) |
kms | 1688 | tcp | misc | 4 | Windows Key Management Service activation |
wsus | 8530 | tcp | misc | 4 | Windows Server Update Services over HTTP | update metadata can be spoofed -> 8531 with TLS
wsus-ssl | 8531 | tcp | misc | 5 | Windows Server Update Services over HTTPS |
delivery-optimization | 7680 | tcp | misc | 4 | Windows Update Delivery Optimization peer-to-peer |
msdeploy | 8172 | tcp | development | 5 | IIS Web Deploy management service | deployment credentials -> restrict to build hosts
ws-discovery/wsd | 3702 | udp | network-management | 3 | Web Services Dynamic Discovery for printers and devices | reflection amplification -> block at the edge
wsdapi | 5357 | tcp | network-management | 3 | Web Services on Devices API over HTTP (network discovery) |
wsdapi-tls | 5358 | tcp | network-management | 5 | Web Services on Devices API over HTTPS |
llmnr | 5355 | tcp,udp | dns | 3 | Link-Local Multicast Name Resolution | name poisoning to steal credentials -> disable LLMNR, use dns
# ---------------------------------------------------------------- dns
dns/domain | 53 | tcp,udp | dns | 2 | Domain Name System queries and zone transfers | open resolvers and zone transfers get abused -> restrict recursion and AXFR
dot/domain-s/dns-over-tls | 853 | tcp | dns | 4 | DNS over TLS |
doq/dns-over-quic | 853 | udp | dns | 5 | DNS over QUIC |
doh/dns-over-https | 443 | tcp | dns | 4 | DNS over HTTPS |
mdns/bonjour/zeroconf | 5353 | udp | dns | 2 | Multicast DNS for local service discovery (Bonjour, Avahi) | leaks host details and reflects traffic -> block at the edge
rndc | 953 | tcp | dns | 5 | BIND remote name daemon control | controls the DNS server -> localhost with a key
unbound-control | 8953 | tcp | dns | 5 | Unbound resolver remote control | controls the resolver -> localhost with certificates
powerdns-api | 8081 | tcp | dns | 5 | PowerDNS HTTP API and web server | zone changes -> API key, localhost
consul-dns | 8600 | tcp,udp | dns | 5 | Consul DNS interface for service discovery |
coredns-metrics | 9153 | tcp | monitoring | 5 | CoreDNS Prometheus metrics |
# ---------------------------------------------------------------- time
ntp | 123 | udp | time | 2 | Network Time Protocol clock synchronisation | monlist reflection on old servers -> disable monlist, use NTS
nts-ke | 4460 | tcp | time | 5 | Network Time Security key establishment for authenticated NTP |
ptp-event | 319 | udp | time | 5 | Precision Time Protocol timestamped event messages |
ptp-general | 320 | udp | time | 5 | Precision Time Protocol general messages |
time | 37 | tcp,udp | time | 5 | Time protocol giving seconds since 1900 | obsolete and unauthenticated -> ntp
daytime | 13 | tcp,udp | time | 5 | Daytime protocol returning the date as text | reflection abuse -> disable, use ntp
roughtime | 2002 | udp | time | 5 | Roughtime authenticated coarse time service |
# ---------------------------------------------------------------- network management
dhcp/bootps | 67 | udp | network-management | 2 | DHCP and BOOTP server | rogue servers redirect clients -> DHCP snooping on switches
dhcp-client/bootpc | 68 | udp | network-management | 2 | DHCP and BOOTP client |
dhcpv6-client | 546 | udp | network-management | 3 | DHCPv6 client |
dhcpv6-server | 547 | udp | network-management | 4 | DHCPv6 server and relay agents | rogue servers redirect clients -> DHCPv6 guard on switches
dhcp-failover | 647 | tcp | network-management | 5 | DHCP failover between ISC-style servers |
snmp | 161 | udp | network-management | 2 | Simple Network Management Protocol queries to devices | v1/v2c community strings like public leak data and allow changes -> SNMPv3 with auth and privacy
snmptrap/snmp-trap | 162 | udp | network-management | 3 | SNMP traps and notifications sent to managers | v1/v2c traps are unauthenticated -> SNMPv3
snmp-tls | 10161 | tcp | network-management | 5 | SNMP over TLS or DTLS |
snmptrap-tls | 10162 | tcp | network-management | 5 | SNMP traps over TLS or DTLS |
syslog | 514 | udp | monitoring | 2 | Classic syslog log messages | unauthenticated, cleartext, spoofable -> syslog over TLS on 6514
syslog-conn | 601 | tcp | monitoring | 5 | Reliable syslog over TCP |
syslog-tls | 6514 | tcp | monitoring | 4 | Syslog over TLS |
netflow | 2055 | udp | monitoring | 4 | NetFlow / flow export from routers to collectors |
netflow-alt | 9996 | udp | monitoring | 5 | NetFlow collector port common in Cisco examples |
netflow-alt | 9995 | udp | monitoring | 5 | NetFlow collector port used by some collectors |
ipfix | 4739 | tcp,udp,sctp | monitoring | 4 | IP Flow Information Export |
ipfix-tls/ipfixs | 4740 | tcp,udp,sctp | monitoring | 5 | IPFIX over TLS or DTLS |
sflow | 6343 | udp | monitoring | 4 | sFlow sampled traffic export |
netconf | 830 | tcp | network-management | 4 | NETCONF device configuration over SSH |
gnmi | 9339 | tcp | network-management | 5 | gNMI / gNOI gRPC network management |
bgp | 179 | tcp | network-management | 3 | Border Gateway Protocol routing sessions | session hijack and resets -> TCP-AO or MD5, GTSM, allow only peers
rip | 520 | udp | network-management | 5 | Routing Information Protocol | spoofable routes -> RIPv2 authentication or OSPF
ripng | 521 | udp | network-management | 5 | Routing Information Protocol for IPv6 |
ldp | 646 | tcp,udp | network-management | 5 | MPLS Label Distribution Protocol |
bfd | 3784 | udp | network-management | 5 | Bidirectional Forwarding Detection control packets |
bfd-echo | 3785 | udp | network-management | 5 | Bidirectional Forwarding Detection echo packets |
hsrp | 1985 | udp | network-management | 5 | Cisco Hot Standby Router Protocol | gateway takeover -> HSRP authentication
vxlan | 4789 | udp | network-management | 4 | VXLAN overlay encapsulation | unauthenticated tunnel, packets can be injected -> filter to known tunnel endpoints
geneve | 6081 | udp | network-management | 5 | Geneve overlay encapsulation | unauthenticated tunnel -> filter to known tunnel endpoints
openflow | 6653 | tcp | network-management | 5 | OpenFlow switch-to-controller channel | controller takeover -> TLS, management network
ovsdb | 6640 | tcp | network-management | 5 | Open vSwitch database management protocol | switch control -> TLS, localhost
teredo | 3544 | udp | network-management | 4 | Teredo IPv6 tunnelling through NAT | bypasses IPv4 firewall rules -> native IPv6, disable Teredo
upnp/ssdp | 1900 | udp | network-management | 2 | SSDP discovery for UPnP devices and DLNA | large reflection attacks -> block at the edge
nat-pmp/pcp | 5351 | udp | network-management | 4 | NAT-PMP and Port Control Protocol for automatic port forwarding | answers on WAN let outsiders open ports -> LAN side only
cwmp/tr-069 | 7547 | tcp | network-management | 3 | TR-069 remote management of home routers by ISPs | exploited by router botnets -> accept only from the ISP's ACS
cisco-smart-install | 4786 | tcp | network-management | 4 | Cisco Smart Install zero-touch switch provisioning | unauthenticated config and firmware changes -> no vstack
fortinet-fgfm | 541 | tcp | network-management | 4 | FortiGate to FortiManager management channel | exploited when exposed -> restrict to the FortiManager address
winbox | 8291 | tcp | network-management | 3 | MikroTik Winbox router management | exploited on old RouterOS -> management network only, updated RouterOS
mikrotik-api | 8728 | tcp | network-management | 4 | MikroTik RouterOS API | cleartext logins -> 8729 with TLS
mikrotik-api-ssl | 8729 | tcp | network-management | 5 | MikroTik RouterOS API over TLS |
mikrotik-btest | 2000 | tcp | network-management | 4 | MikroTik bandwidth test server | lets others consume bandwidth -> disable or restrict
ubiquiti-discovery | 10001 | udp | network-management | 4 | Ubiquiti device discovery | reflection abuse -> block at the edge
unifi-inform | 8080 | tcp | network-management | 4 | UniFi device-to-controller inform channel |
unifi-controller | 8443 | tcp | network-management | 4 | UniFi network controller web interface |
airport-admin | 5009 | tcp | network-management | 5 | Apple AirPort base station administration |
slp/svrloc | 427 | tcp,udp | network-management | 4 | Service Location Protocol (VMware ESXi, printers) | reflection and ESXi exploits -> disable SLP
# ---------------------------------------------------------------- configuration management
puppet | 8140 | tcp | development | 4 | Puppet server agent connections |
salt-publish | 4505 | tcp | development | 4 | SaltStack master publish port | auth bypass exploits on old masters -> patch, private network
salt-request | 4506 | tcp | development | 4 | SaltStack master request port | auth bypass exploits on old masters -> patch, private network
cfengine | 5308 | tcp | development | 5 | CFEngine policy distribution |
# ---------------------------------------------------------------- monitoring and observability
prometheus | 9090 | tcp | monitoring | 3 | Prometheus server UI and query API | exposes internal targets and metrics -> authentication proxy, private network
prometheus-pushgateway | 9091 | tcp | monitoring | 5 | Prometheus Pushgateway |
alertmanager | 9093 | tcp | monitoring | 4 | Prometheus Alertmanager |
alertmanager-cluster | 9094 | tcp,udp | monitoring | 5 | Prometheus Alertmanager cluster gossip |
node-exporter | 9100 | tcp | monitoring | 3 | Prometheus node exporter host metrics | leaks host details -> private network or TLS with auth
blackbox-exporter | 9115 | tcp | monitoring | 5 | Prometheus blackbox probing exporter | can be used to probe internal hosts -> private network
mysqld-exporter | 9104 | tcp | monitoring | 5 | Prometheus exporter for MySQL |
postgres-exporter | 9187 | tcp | monitoring | 5 | Prometheus exporter for PostgreSQL |
redis-exporter | 9121 | tcp | monitoring | 5 | Prometheus exporter for Redis |
cadvisor | 8080 | tcp | monitoring | 5 | cAdvisor container resource metrics |
grafana | 3000 | tcp | monitoring | 3 | Grafana dashboards | default admin/admin and data source access -> change credentials, SSO
loki | 3100 | tcp | monitoring | 5 | Grafana Loki log aggregation HTTP API |
tempo | 3200 | tcp | monitoring | 5 | Grafana Tempo tracing HTTP API |
pyroscope | 4040 | tcp | monitoring | 5 | Pyroscope continuous profiling server |
jaeger-ui | 16686 | tcp | monitoring | 5 | Jaeger tracing query UI |
jaeger-collector | 14268 | tcp | monitoring | 5 | Jaeger collector HTTP endpoint for spans |
jaeger-grpc | 14250 | tcp | monitoring | 5 | Jaeger collector gRPC endpoint |
jaeger-agent-compact | 6831 | udp | monitoring | 5 | Jaeger agent, compact Thrift spans |
jaeger-agent-binary | 6832 | udp | monitoring | 5 | Jaeger agent, binary Thrift spans |
zipkin | 9411 | tcp | monitoring | 5 | Zipkin tracing collector and UI |
otlp-grpc | 4317 | tcp | monitoring | 4 | OpenTelemetry Protocol over gRPC |
otlp-http | 4318 | tcp | monitoring | 4 | OpenTelemetry Protocol over HTTP |
statsd | 8125 | udp | monitoring | 4 | StatsD metrics, also the Datadog agent DogStatsD port |
statsd-admin | 8126 | tcp | monitoring | 5 | StatsD admin interface, also the Datadog APM trace intake |
graphite/carbon | 2003 | tcp | monitoring | 4 | Graphite carbon plaintext metrics | unauthenticated writes -> private network
graphite-pickle | 2004 | tcp | monitoring | 5 | Graphite carbon pickle metrics | unpickling untrusted data -> private network only
kibana | 5601 | tcp | monitoring | 4 | Kibana / OpenSearch Dashboards UI | open dashboards leak data -> enable security
logstash-beats | 5044 | tcp | monitoring | 4 | Logstash input for Beats shippers |
logstash-api | 9600 | tcp | monitoring | 5 | Logstash monitoring API |
fluentd | 24224 | tcp,udp | monitoring | 5 | Fluentd / Fluent Bit forward protocol | unauthenticated log injection -> shared key, TLS
fluent-bit | 2020 | tcp | monitoring | 5 | Fluent Bit HTTP monitoring server |
elastic-apm | 8200 | tcp | monitoring | 5 | Elastic APM server intake |
splunk-web | 8000 | tcp | monitoring | 4 | Splunk web interface |
splunk-mgmt | 8089 | tcp | monitoring | 4 | Splunk management REST API | admin access -> restrict to management network
splunk-forwarder | 9997 | tcp | monitoring | 4 | Splunk indexer receiving data from forwarders |
splunk-hec | 8088 | tcp | monitoring | 5 | Splunk HTTP Event Collector |
graylog | 9000 | tcp | monitoring | 5 | Graylog web interface and API |
gelf | 12201 | tcp,udp | monitoring | 5 | Graylog Extended Log Format input | unauthenticated log injection -> TLS and private network
sentry | 9000 | tcp | monitoring | 5 | Self-hosted Sentry web interface |
victoriametrics | 8428 | tcp | monitoring | 5 | VictoriaMetrics single-node HTTP API |
thanos-grpc | 10901 | tcp | monitoring | 5 | Thanos components gRPC store API |
thanos-http | 10902 | tcp | monitoring | 5 | Thanos components HTTP interface |
opentsdb | 4242 | tcp | monitoring | 5 | OpenTSDB time series daemon |
netdata | 19999 | tcp | monitoring | 4 | Netdata real-time monitoring dashboard | leaks host details -> bind to localhost or add auth
uptime-kuma | 3001 | tcp | monitoring | 5 | Uptime Kuma status monitor |
zabbix-agent | 10050 | tcp | monitoring | 3 | Zabbix agent polled by the server | remote commands if enabled -> allow only the server, PSK or certificates
zabbix-trapper | 10051 | tcp | monitoring | 4 | Zabbix server and proxy receiving active checks and traps |
nrpe | 5666 | tcp | monitoring | 4 | Nagios Remote Plugin Executor | command arguments abuse -> allow only the Nagios host, TLS
nsca | 5667 | tcp | monitoring | 5 | Nagios Service Check Acceptor |
icinga-api | 5665 | tcp | monitoring | 5 | Icinga 2 API and cluster communication |
check-mk-agent | 6556 | tcp | monitoring | 4 | Checkmk agent | leaks host details -> allow only the monitoring server, TLS
munin | 4949 | tcp | monitoring | 5 | Munin node |
collectd | 25826 | udp | monitoring | 5 | collectd network plugin |
wazuh-agent | 1514 | tcp,udp | security | 4 | Wazuh / OSSEC agent event traffic |
wazuh-enrollment | 1515 | tcp | security | 5 | Wazuh agent enrollment |
wazuh-api | 55000 | tcp | security | 5 | Wazuh server API |
# ---------------------------------------------------------------- containers and orchestration
docker | 2375 | tcp | container | 3 | Docker Engine API without TLS | unauthenticated root-equivalent API, mined by cryptojackers -> 2376 with TLS client certificates or ssh
docker-tls/docker-s | 2376 | tcp | container | 4 | Docker Engine API over TLS |
docker-swarm | 2377 | tcp | orchestration | 5 | Docker Swarm cluster management |
docker-swarm-gossip | 7946 | tcp,udp | orchestration | 5 | Docker Swarm node discovery and gossip |
docker-overlay | 4789 | udp | orchestration | 5 | Docker Swarm overlay network (VXLAN) | unencrypted overlay by default -> encrypted overlay networks
docker-registry | 5000 | tcp | container | 4 | Docker / OCI container image registry | push and pull without auth -> TLS and authentication
portainer | 9000 | tcp | container | 4 | Portainer container management UI over HTTP | controls all containers -> 9443 over HTTPS, restrict access
portainer-https | 9443 | tcp | container | 4 | Portainer container management UI over HTTPS | controls all containers -> restrict access
portainer-edge | 8000 | tcp | container | 5 | Portainer edge agent tunnel server |
portainer-agent | 9001 | tcp | container | 5 | Portainer agent |
kubernetes-api/kube-apiserver | 6443 | tcp | orchestration | 3 | Kubernetes API server | anonymous access or leaked tokens give cluster control -> RBAC, restrict source addresses
kube-apiserver-insecure | 8080 | tcp | orchestration | 5 | Kubernetes API server insecure port, removed in 1.20 | unauthenticated cluster control -> 6443 with authentication
kubelet | 10250 | tcp | orchestration | 4 | Kubernetes kubelet API | anonymous access allows running commands in pods -> disable anonymous auth, webhook authz
kubelet-readonly | 10255 | tcp | orchestration | 5 | Kubernetes kubelet read-only API, deprecated | leaks pod details -> disable (read-only-port=0)
kube-scheduler | 10259 | tcp | orchestration | 5 | Kubernetes scheduler HTTPS endpoint |
kube-controller-manager | 10257 | tcp | orchestration | 5 | Kubernetes controller manager HTTPS endpoint |
kube-proxy-health | 10256 | tcp | orchestration | 5 | Kubernetes kube-proxy health check |
kube-proxy-metrics | 10249 | tcp | orchestration | 5 | Kubernetes kube-proxy metrics |
kubernetes-nodeport | 30000-32767 | tcp,udp | orchestration | 4 | Kubernetes NodePort service range |
kubectl-proxy | 8001 | tcp | orchestration | 5 | kubectl proxy to the API server, localhost by default | unauthenticated cluster access if bound widely -> keep on localhost
etcd | 2379 | tcp | orchestration | 4 | etcd client API (Kubernetes state store) | holds cluster secrets -> client certificates, private network
etcd-peer | 2380 | tcp | orchestration | 5 | etcd peer-to-peer replication | cluster state -> peer certificates, private network
calico-typha | 5473 | tcp | orchestration | 5 | Calico Typha fan-out proxy |
flannel-vxlan | 8472 | udp | orchestration | 5 | Flannel and Cilium VXLAN overlay (Linux kernel default VXLAN port) | unencrypted overlay -> WireGuard or IPsec backend
cilium-health | 4240 | tcp | orchestration | 5 | Cilium node health checks |
weave | 6783 | tcp | orchestration | 5 | Weave Net control |
weave-data | 6783-6784 | udp | orchestration | 5 | Weave Net data plane |
tiller | 44134 | tcp | orchestration | 5 | Helm 2 Tiller, removed in Helm 3 | cluster-admin without auth -> Helm 3
consul | 8500 | tcp | orchestration | 4 | Consul HTTP API and UI | service registration enables code execution without ACLs -> enable ACLs, TLS on 8501
consul-https | 8501 | tcp | orchestration | 5 | Consul HTTPS API |
consul-grpc | 8502 | tcp | orchestration | 5 | Consul gRPC API for Envoy xDS |
consul-server | 8300 | tcp | orchestration | 5 | Consul server RPC |
consul-serf-lan | 8301 | tcp,udp | orchestration | 5 | Consul LAN gossip |
consul-serf-wan | 8302 | tcp,udp | orchestration | 5 | Consul WAN gossip between datacenters |
nomad | 4646 | tcp | orchestration | 4 | Nomad HTTP API and UI | job submission runs code without ACLs -> enable ACLs and TLS
nomad-rpc | 4647 | tcp | orchestration | 5 | Nomad RPC between agents |
nomad-serf | 4648 | tcp,udp | orchestration | 5 | Nomad server gossip |
mesos-master | 5050 | tcp | orchestration | 5 | Apache Mesos master |
mesos-agent | 5051 | tcp | orchestration | 5 | Apache Mesos agent |
marathon | 8080 | tcp | orchestration | 5 | Marathon scheduler for Mesos |
traefik-dashboard | 8080 | tcp | orchestration | 5 | Traefik API and dashboard in insecure mode | exposes routing config -> secure the dashboard behind auth
envoy-admin | 9901 | tcp | orchestration | 5 | Envoy proxy admin interface | can shut down or reconfigure the proxy -> localhost only
istio-envoy-admin | 15000 | tcp | orchestration | 5 | Istio sidecar Envoy admin port, localhost |
istio-outbound | 15001 | tcp | orchestration | 5 | Istio sidecar outbound traffic capture |
istio-inbound | 15006 | tcp | orchestration | 5 | Istio sidecar inbound traffic capture |
istiod-xds | 15010 | tcp | orchestration | 5 | istiod plaintext xDS and CA |
istiod-xds-tls | 15012 | tcp | orchestration | 5 | istiod xDS and CA over mTLS |
istiod-monitoring | 15014 | tcp | orchestration | 5 | istiod control plane monitoring |
istiod-webhook | 15017 | tcp | orchestration | 5 | istiod webhook container port |
istio-health | 15021 | tcp | orchestration | 5 | Istio sidecar health checks |
istio-metrics | 15090 | tcp | orchestration | 5 | Istio Envoy Prometheus telemetry |
linkerd-admin | 4191 | tcp | orchestration | 5 | Linkerd proxy admin and metrics |
openstack-keystone | 5000 | tcp | orchestration | 5 | OpenStack Identity (Keystone) API |
openstack-nova | 8774 | tcp | orchestration | 5 | OpenStack Compute (Nova) API |
openstack-glance | 9292 | tcp | orchestration | 5 | OpenStack Image (Glance) API |
openstack-neutron | 9696 | tcp | orchestration | 5 | OpenStack Networking (Neutron) API |
openstack-cinder | 8776 | tcp | orchestration | 5 | OpenStack Block Storage (Cinder) API |
# ---------------------------------------------------------------- development tools
git | 9418 | tcp | development | 4 | Git daemon, read-only anonymous git protocol | unauthenticated, unencrypted -> git over ssh or https
svn | 3690 | tcp | development | 4 | Subversion svnserve | cleartext unless SASL -> svn over https or ssh
cvspserver | 2401 | tcp | development | 5 | CVS password server | trivially encoded passwords -> ssh access
perforce | 1666 | tcp | development | 5 | Perforce Helix Core server |
gerrit-ssh | 29418 | tcp | development | 5 | Gerrit code review SSH interface |
gitea | 3000 | tcp | development | 5 | Gitea / Forgejo web interface |
jenkins | 8080 | tcp | development | 4 | Jenkins automation server web UI | script console gives code execution -> authentication, private network
jenkins-agent | 50000 | tcp | development | 5 | Jenkins inbound agent connections |
nexus | 8081 | tcp | development | 5 | Sonatype Nexus repository manager | default admin password on old versions -> change, restrict
artifactory | 8081 | tcp | development | 5 | JFrog Artifactory service port |
artifactory-router | 8082 | tcp | development | 5 | JFrog Artifactory router and UI |
sonarqube | 9000 | tcp | development | 5 | SonarQube code quality server | default admin/admin -> change password
teamcity | 8111 | tcp | development | 5 | JetBrains TeamCity server | auth bypass exploits -> patch, private network
bamboo | 8085 | tcp | development | 5 | Atlassian Bamboo server |
verdaccio | 4873 | tcp | development | 5 | Verdaccio private npm registry |
devpi | 3141 | tcp | development | 5 | devpi private Python package index |
distcc | 3632 | tcp | development | 4 | distcc distributed compiler daemon | runs commands for anyone allowed -> restrict --allow, private network
jdwp | 5005 | tcp | development | 5 | Java Debug Wire Protocol, conventional port for remote debugging | full code execution in the JVM -> localhost or ssh tunnel
java-rmi/rmiregistry | 1099 | tcp | development | 4 | Java RMI registry (also JMX remoting) | deserialization attacks -> localhost or authenticated TLS JMX
node-inspector | 9229 | tcp | development | 5 | Node.js inspector debugging protocol | code execution -> bind to localhost
chrome-devtools | 9222 | tcp | development | 5 | Chrome remote debugging protocol | full browser control -> bind to localhost
debugpy | 5678 | tcp | development | 5 | Python debugpy remote debugger, conventional port | code execution -> localhost or ssh tunnel
xdebug | 9003 | tcp | development | 5 | Xdebug 3 debugger connections from PHP to the IDE |
delve | 2345 | tcp | development | 5 | Delve Go debugger headless server, conventional port | code execution -> localhost
jupyter | 8888 | tcp | development | 3 | Jupyter Notebook / JupyterLab | runs arbitrary code -> token or password, localhost, ssh tunnel
jupyterhub | 8000 | tcp | development | 5 | JupyterHub multi-user notebook server |
rstudio-server | 8787 | tcp | development | 5 | RStudio Server (Posit Workbench) |
mlflow | 5000 | tcp | development | 5 | MLflow tracking server | no auth by default, file read flaws -> auth proxy, private network
tensorboard | 6006 | tcp | development | 5 | TensorBoard training dashboards |
ray-dashboard | 8265 | tcp | development | 5 | Ray cluster dashboard and job API | job submission runs code without auth -> private network only
ray-gcs | 6379 | tcp | development | 5 | Ray head node global control store |
ollama | 11434 | tcp | development | 4 | Ollama local LLM API | no auth, model theft and abuse -> bind to localhost
spark-master | 7077 | tcp | development | 5 | Apache Spark standalone master | job submission runs code -> authentication, private network
spark-master-ui | 8080 | tcp | development | 5 | Apache Spark standalone master web UI |
spark-app-ui | 4040 | tcp | development | 5 | Apache Spark application web UI |
hadoop-yarn | 8088 | tcp | development | 4 | Hadoop YARN ResourceManager web UI and REST | unauthenticated job submission is mass-exploited -> Kerberos, private network
flink | 8081 | tcp | development | 5 | Apache Flink web UI and REST | job upload runs code -> private network
airflow | 8080 | tcp | development | 5 | Apache Airflow web server |
selenium-grid | 4444 | tcp | development | 5 | Selenium Grid hub | remote browser abuse -> private network
localstack | 4566 | tcp | development | 5 | LocalStack AWS service emulator edge port |
dynamodb-local | 8000 | tcp | development | 5 | DynamoDB Local emulator |
ngrok-inspect | 4040 | tcp | development | 5 | ngrok agent local inspection UI |
# ---------------------------------------------------------------- vpn and tunnels
openvpn | 1194 | tcp,udp | vpn | 3 | OpenVPN TLS-based VPN |
wireguard | 51820 | udp | vpn | 3 | WireGuard VPN, conventional default port |
ike/isakmp | 500 | udp | vpn | 3 | IPsec Internet Key Exchange (IKEv1/IKEv2) | IKEv1 aggressive mode leaks PSK hashes -> IKEv2 with certificates
ipsec-nat-t | 4500 | udp | vpn | 3 | IPsec NAT traversal (ESP and IKE in UDP) |
pptp | 1723 | tcp | vpn | 3 | Point-to-Point Tunnelling Protocol VPN | MS-CHAPv2 is broken -> wireguard or IKEv2 IPsec
l2tp | 1701 | udp | vpn | 4 | Layer 2 Tunnelling Protocol, normally inside IPsec | no encryption on its own -> IKEv2 IPsec or wireguard
sstp | 443 | tcp | vpn | 4 | Microsoft Secure Socket Tunnelling Protocol over HTTPS |
openconnect/anyconnect | 443 | tcp,udp | vpn | 3 | Cisco AnyConnect / OpenConnect SSL VPN, DTLS on UDP |
fortinet-sslvpn | 10443 | tcp | vpn | 4 | FortiGate SSL VPN, common alternate port | repeatedly exploited -> patch promptly, restrict, or IPsec
softether | 5555 | tcp | vpn | 5 | SoftEther VPN server listener |
tinc | 655 | tcp,udp | vpn | 5 | tinc mesh VPN |
tailscale | 41641 | udp | vpn | 4 | Tailscale WireGuard direct connections |
zerotier | 9993 | udp | vpn | 4 | ZeroTier peer-to-peer virtual networks |
nebula | 4242 | udp | vpn | 5 | Nebula overlay network lighthouse and hosts |
# ---------------------------------------------------------------- voip and conferencing
sip | 5060 | tcp,udp | voip | 3 | Session Initiation Protocol call signalling | toll fraud from brute-forced extensions -> sips on 5061, strong secrets, fail2ban
sips/sip-tls | 5061 | tcp | voip | 4 | SIP over TLS |
rtp | 10000-20000 | udp | voip | 4 | RTP/RTCP media streams; range is configurable, this is Asterisk's default | unencrypted audio -> SRTP
iax2 | 4569 | udp | voip | 4 | Inter-Asterisk eXchange v2 signalling and media | toll fraud from weak secrets -> strong secrets, restrict peers
h323/h323-q931 | 1720 | tcp | voip | 4 | H.323 call setup (Q.931) | toll fraud and exploits -> restrict to known gateways
h323-ras | 1719 | udp | voip | 5 | H.323 gatekeeper registration, admission and status |
mgcp-gateway | 2427 | udp | voip | 5 | Media Gateway Control Protocol, gateway side |
mgcp-callagent | 2727 | udp | voip | 5 | Media Gateway Control Protocol, call agent side |
sccp/skinny | 2000 | tcp | voip | 4 | Cisco Skinny Client Control Protocol for IP phones |
stun/turn | 3478 | tcp,udp | voip | 3 | STUN and TURN for NAT traversal in WebRTC and VoIP | open TURN relays reach internal networks -> deny private peer ranges
stuns/turns | 5349 | tcp,udp | voip | 4 | STUN and TURN over TLS or DTLS |
turn-relay | 49152-65535 | udp | voip | 5 | Default TURN relay range (coturn) |
asterisk-ami | 5038 | tcp | voip | 5 | Asterisk Manager Interface | controls the PBX with cleartext logins -> localhost, TLS
freeswitch-esl | 8021 | tcp | voip | 5 | FreeSWITCH event socket | default password ClueCon -> change, bind to localhost
jitsi-videobridge | 10000 | udp | voip | 4 | Jitsi Videobridge media |
zoom | 8801-8810 | tcp,udp | voip | 4 | Zoom meeting media and Zoom Rooms connectors |
teams-media | 3478-3481 | udp | voip | 4 | Microsoft Teams audio, video and screen sharing media |
teamspeak | 9987 | udp | voip | 4 | TeamSpeak 3 voice |
teamspeak-query | 10011 | tcp | voip | 5 | TeamSpeak 3 ServerQuery | brute-forced admin interface -> allow-list addresses
teamspeak-filetransfer | 30033 | tcp | voip | 5 | TeamSpeak 3 file transfers |
mumble | 64738 | tcp,udp | voip | 4 | Mumble / Murmur voice chat |
ventrilo | 3784 | tcp,udp | voip | 5 | Ventrilo voice chat |
# ---------------------------------------------------------------- games
minecraft | 25565 | tcp | game | 3 | Minecraft Java Edition server | unpatched servers and plugins -> keep updated, online-mode on
minecraft-query | 25565 | udp | game | 5 | Minecraft Java Edition GameSpy4 query, when enabled |
minecraft-rcon | 25575 | tcp | game | 5 | Minecraft remote console | weak passwords give server control -> firewall, strong password
minecraft-bedrock | 19132 | udp | game | 4 | Minecraft Bedrock Edition server (IPv4) |
minecraft-bedrock-v6 | 19133 | udp | game | 5 | Minecraft Bedrock Edition server (IPv6) |
srcds/source | 27015 | tcp,udp | game | 4 | Source engine dedicated servers: game on UDP, RCON on TCP (CS, TF2, Garry's Mod) | RCON brute force -> strong rcon password, firewall TCP
steam | 27015-27050 | tcp,udp | game | 4 | Steam client login and content download |
steam-game | 27000-27100 | udp | game | 4 | Steam client game traffic |
steam-remote-play | 27031-27036 | udp | game | 5 | Steam Remote Play and in-home streaming |
steam-remote-play | 27036 | tcp | game | 5 | Steam Remote Play and in-home streaming |
xbox-live | 3074 | tcp,udp | game | 4 | Xbox network and many console games |
battle-net | 1119 | tcp,udp | game | 5 | Blizzard Battle.net |
quake3 | 27960 | udp | game | 5 | Quake III Arena and id Tech 3 servers |
quakeworld | 27500 | udp | game | 5 | QuakeWorld servers |
xonotic | 26000 | udp | game | 5 | Xonotic and Quake engine servers |
unreal | 7777 | udp | game | 5 | Unreal Engine game servers (also ARK, Satisfactory) |
terraria | 7777 | tcp | game | 5 | Terraria server |
satisfactory | 7777 | tcp,udp | game | 5 | Satisfactory dedicated server (1.0 and later) |
rust-game | 28015 | udp | game | 5 | Rust game server |
rust-rcon | 28016 | tcp | game | 5 | Rust WebSocket RCON | server control -> strong password, firewall
factorio | 34197 | udp | game | 5 | Factorio multiplayer server |
valheim | 2456-2458 | udp | game | 5 | Valheim dedicated server |
fivem | 30120 | tcp,udp | game | 5 | FiveM (GTA V multiplayer) server |
palworld | 8211 | udp | game | 5 | Palworld dedicated server |
seven-days-to-die | 26900 | tcp | game | 5 | 7 Days to Die server |
seven-days-to-die | 26900-26902 | udp | game | 5 | 7 Days to Die server game traffic |
minetest/luanti | 30000 | udp | game | 5 | Minetest (Luanti) server |
openttd | 3979 | tcp,udp | game | 5 | OpenTTD multiplayer server |
wesnoth | 15000 | tcp | game | 5 | Battle for Wesnoth multiplayer server |
starbound | 21025 | tcp | game | 5 | Starbound server |
teeworlds | 8303 | udp | game | 5 | Teeworlds / DDNet server |
arma3 | 2302-2306 | udp | game | 5 | Arma 3 dedicated server |
dayz | 2302 | udp | game | 5 | DayZ dedicated server |
enshrouded | 15636-15637 | udp | game | 5 | Enshrouded dedicated server |
space-engineers | 27016 | udp | game | 5 | Space Engineers dedicated server |
# ---------------------------------------------------------------- printing
ipp/cups | 631 | tcp | printing | 3 | Internet Printing Protocol (CUPS), with or without TLS | exposed admin pages -> restrict to the LAN, require TLS
cups-browsed | 631 | udp | printing | 4 | CUPS printer browsing announcements | remote code execution chain (2024) -> disable cups-browsed or block UDP 631
lpd/printer | 515 | tcp | printing | 4 | Line Printer Daemon | unauthenticated printing -> ipp on 631 within the LAN
jetdirect/pdl-datastream | 9100 | tcp | printing | 3 | Raw printing (HP JetDirect, AppSocket) | anyone can print or send printer commands -> restrict to print servers
# ---------------------------------------------------------------- streaming and media
rtsp | 554 | tcp,udp | streaming | 3 | Real Time Streaming Protocol, common on IP cameras | camera feeds often without passwords -> credentials, VPN
rtsp-alt | 8554 | tcp | streaming | 4 | Alternative RTSP port |
rtmp | 1935 | tcp | streaming | 4 | Real-Time Messaging Protocol for live video ingest | cleartext stream keys -> rtmps on 443
rtmps | 443 | tcp | streaming | 4 | RTMP inside TLS |
hls | 443 | tcp | streaming | 3 | HTTP Live Streaming segments and playlists over HTTPS |
hls | 80 | tcp | streaming | 4 | HTTP Live Streaming over plain HTTP | unencrypted -> hls over https
mms | 1755 | tcp,udp | streaming | 5 | Microsoft Media Server streaming, obsolete |
icecast/shoutcast | 8000 | tcp | streaming | 4 | Icecast and SHOUTcast internet radio servers |
plex | 32400 | tcp | streaming | 3 | Plex Media Server |
plex-gdm | 32410 | udp | streaming | 5 | Plex network discovery (GDM) |
plex-gdm | 32412-32414 | udp | streaming | 5 | Plex network discovery (GDM) |
plex-dlna | 32469 | tcp | streaming | 5 | Plex DLNA server |
jellyfin/emby | 8096 | tcp | streaming | 4 | Jellyfin and Emby media server HTTP |
jellyfin-https | 8920 | tcp | streaming | 5 | Jellyfin and Emby media server HTTPS |
jellyfin-discovery | 7359 | udp | streaming | 5 | Jellyfin client discovery |
sonarr | 8989 | tcp | streaming | 5 | Sonarr TV download manager | no auth on LAN by default -> require login
radarr | 7878 | tcp | streaming | 5 | Radarr movie download manager | no auth on LAN by default -> require login
lidarr | 8686 | tcp | streaming | 5 | Lidarr music download manager |
prowlarr | 9696 | tcp | streaming | 5 | Prowlarr indexer manager |
jackett | 9117 | tcp | streaming | 5 | Jackett torrent indexer proxy |
qbittorrent-web | 8080 | tcp | streaming | 5 | qBittorrent web UI | default credentials -> change password, LAN only
transmission-rpc | 9091 | tcp | streaming | 5 | Transmission BitTorrent web UI and RPC | no auth by default -> set rpc password and allow-list
deluge-web | 8112 | tcp | streaming | 5 | Deluge BitTorrent web UI | default password -> change password
sabnzbd | 8080 | tcp | streaming | 5 | SABnzbd Usenet downloader web UI |
nzbget | 6789 | tcp | streaming | 5 | NZBGet Usenet downloader web UI |
airplay | 7000 | tcp | streaming | 4 | Apple AirPlay receiver (also on macOS) |
chromecast | 8008 | tcp | streaming | 4 | Google Cast device HTTP interface |
chromecast-tls | 8009 | tcp | streaming | 4 | Google Cast device control channel over TLS |
daap | 3689 | tcp | streaming | 5 | Digital Audio Access Protocol (iTunes / Music sharing) |
mpd | 6600 | tcp | streaming | 5 | Music Player Daemon control protocol |
slimproto | 3483 | tcp,udp | streaming | 5 | Squeezebox / Lyrion Music Server player protocol |
lyrion-web | 9000 | tcp | streaming | 5 | Squeezebox / Lyrion Music Server web interface |
sonos | 1400 | tcp | streaming | 4 | Sonos speaker UPnP control |
kodi-web | 8080 | tcp | streaming | 5 | Kodi web interface and JSON-RPC over HTTP |
kodi-jsonrpc-ws | 9090 | tcp | streaming | 5 | Kodi JSON-RPC over WebSocket |
roku-ecp | 8060 | tcp | streaming | 4 | Roku External Control Protocol | unauthenticated remote control -> isolate on the LAN
spotify-connect | 57621 | udp | streaming | 4 | Spotify desktop client local network discovery |
# ---------------------------------------------------------------- industrial control and iot
modbus | 502 | tcp | industrial | 4 | Modbus/TCP industrial device control | no authentication, direct process control -> isolated OT network, never internet-facing
s7comm/iso-tsap | 102 | tcp | industrial | 4 | ISO-TSAP carrying Siemens S7 and IEC 61850 MMS | unauthenticated PLC access -> isolated OT network
dnp3 | 20000 | tcp,udp | industrial | 5 | DNP3 SCADA protocol for utilities | no auth without Secure Authentication -> isolated OT network, DNP3-SA
iec-104 | 2404 | tcp | industrial | 5 | IEC 60870-5-104 telecontrol for power grids | unauthenticated control -> isolated OT network
bacnet | 47808 | udp | industrial | 4 | BACnet/IP building automation | unauthenticated control of building systems -> isolated network, BACnet/SC
opc-ua | 4840 | tcp | industrial | 4 | OPC UA industrial data exchange | security mode None allows unauthenticated access -> Sign and Encrypt mode
opc-ua-tls | 4843 | tcp | industrial | 5 | OPC UA over TLS |
ethernet-ip | 44818 | tcp,udp | industrial | 5 | EtherNet/IP (CIP) explicit messaging | unauthenticated PLC access -> isolated OT network
ethernet-ip-io | 2222 | udp | industrial | 5 | EtherNet/IP implicit I/O messaging |
profinet | 34962-34964 | tcp,udp | industrial | 5 | PROFINET RT unicast, multicast and context manager | unauthenticated -> isolated OT network
niagara-fox | 1911 | tcp | industrial | 5 | Tridium Niagara Fox protocol | building automation exposure -> VPN, 4911 with TLS
niagara-fox-tls | 4911 | tcp | industrial | 5 | Tridium Niagara Fox protocol over TLS |
hart-ip | 5094 | tcp,udp | industrial | 5 | HART-IP field device protocol |
ge-srtp | 18245 | tcp | industrial | 5 | GE Service Request Transport Protocol for PLCs |
proconos | 20547 | tcp | industrial | 5 | ProConOS PLC runtime |
pcworx | 1962 | tcp | industrial | 5 | Phoenix Contact PCWorx PLC engineering |
red-lion-crimson | 789 | tcp | industrial | 5 | Red Lion Crimson v3 HMI programming |
omron-fins | 9600 | udp | industrial | 5 | Omron FINS PLC protocol | unauthenticated PLC access -> isolated OT network
beckhoff-ads | 48898 | tcp | industrial | 5 | Beckhoff TwinCAT ADS |
beckhoff-ads-discovery | 48899 | udp | industrial | 5 | Beckhoff TwinCAT ADS discovery |
fanuc-focas | 8193 | tcp | industrial | 5 | FANUC FOCAS CNC machine data |
digi-realport | 771 | tcp | industrial | 5 | Digi RealPort serial-over-IP |
knx | 3671 | udp | iot | 5 | KNXnet/IP home and building automation | unauthenticated bus access -> KNX Secure, isolated network
coap | 5683 | udp | iot | 4 | Constrained Application Protocol for small IoT devices | reflection amplification -> coaps on 5684, block at the edge
coaps | 5684 | udp | iot | 5 | CoAP over DTLS |
node-red | 1880 | tcp | iot | 4 | Node-RED flow editor | flow editor runs code without auth by default -> adminAuth, localhost
home-assistant | 8123 | tcp | iot | 4 | Home Assistant web interface and API |
openhab | 8080 | tcp | iot | 5 | openHAB home automation web interface |
zwave-js-ui | 8091 | tcp | iot | 5 | Z-Wave JS UI web interface |
esphome-api | 6053 | tcp | iot | 5 | ESPHome device native API |
dahua-dvr | 37777 | tcp | iot | 4 | Dahua DVR / NVR client protocol | default credentials and auth bypasses -> VPN only
hikvision-sdk | 8000 | tcp | iot | 4 | Hikvision camera and NVR SDK port | exploited devices -> VPN only, firmware updates
# ---------------------------------------------------------------- security tools
nessus | 8834 | tcp | security | 5 | Tenable Nessus scanner web interface |
openvas/gvm | 9392 | tcp | security | 5 | Greenbone / OpenVAS web interface |
msfrpcd | 55553 | tcp | security | 5 | Metasploit RPC daemon | remote control of an exploit framework -> localhost with a strong password
cobalt-strike-teamserver | 50050 | tcp | security | 5 | Cobalt Strike team server, often seen on attacker infrastructure |
# ---------------------------------------------------------------- legacy and miscellaneous
echo | 7 | tcp,udp | misc | 5 | Echo service returning what it receives | reflection and loops -> disable
discard | 9 | tcp,udp | misc | 5 | Discard service dropping what it receives | needless exposure -> disable
qotd | 17 | tcp,udp | misc | 5 | Quote of the Day | reflection amplification -> disable
chargen | 19 | tcp,udp | misc | 5 | Character generator | strong reflection amplification -> disable
finger | 79 | tcp | misc | 5 | Finger user information | leaks user names and activity -> disable
whois | 43 | tcp | misc | 5 | WHOIS registration lookups |
"""
