/* A fast loopback OpenAI-compatible upstream for the gateway benchmark: one
 * epoll thread, keep-alive HTTP/1.1, and a canned answer to every POST:
 * an SSE stream (with a usage chunk) when the body asks for "stream":true,
 * else a chat.completion JSON body. It answers in a few microseconds, so
 * what a benchmark measures through a gateway is the gateway.
 *
 *   cc -O2 -o mock_upstream mock_upstream.c && ./mock_upstream PORT */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536

struct conn {
    int fd;
    size_t len;
    char buf[BUF];
};

static const char json_body[] =
    "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":1,"
    "\"model\":\"mock\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"Aspirin interacts with warfarin.\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":5,\"total_tokens\":16}}";

static const char sse_body[] =
    "data: {\"id\":\"m\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"Aspirin interacts with warfarin.\"},"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"m\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"m\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":"
    "{\"prompt_tokens\":11,\"completion_tokens\":5,\"total_tokens\":16}}\n\n"
    "data: [DONE]\n\n";

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Answers every complete request in c->buf; returns -1 to close. */
static int serve(struct conn *c)
{
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4), *cl, head[256], *body;
        size_t hlen, blen = 0, total;
        int n, stream;

        if (!end)
            return c->len >= BUF ? -1 : 0;
        hlen = (size_t)(end - c->buf) + 4;
        c->buf[hlen - 1] = '\0';
        cl = strcasestr(c->buf, "\r\ncontent-length:");
        if (cl)
            blen = strtoul(cl + 17, NULL, 10);
        c->buf[hlen - 1] = '\n';
        total = hlen + blen;
        if (total > BUF)
            return -1;
        if (c->len < total)
            return 0;
        body = c->buf + hlen;
        stream = memmem(body, blen, "\"stream\":true", 13) != NULL ||
                 memmem(body, blen, "\"stream\": true", 14) != NULL;
        if (stream)
            n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: "
                         "text/event-stream\r\nContent-Length: %zu\r\n\r\n",
                         sizeof(sse_body) - 1);
        else
            n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Type: "
                         "application/json\r\nContent-Length: %zu\r\n\r\n",
                         sizeof(json_body) - 1);
        send_all(c->fd, head, (size_t)n);
        if (stream)
            send_all(c->fd, sse_body, sizeof(sse_body) - 1);
        else
            send_all(c->fd, json_body, sizeof(json_body) - 1);
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct epoll_event ev, evs[256];
    int lfd, ep, one = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: mock_upstream PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 1024) != 0) {
        perror("mock_upstream: bind/listen");
        return 1;
    }
    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);

        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;

            if (!c) {
                int fd = accept(lfd, NULL, NULL);

                if (fd < 0)
                    continue;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                c = calloc(1, sizeof(*c));
                if (!c) {
                    close(fd);
                    continue;
                }
                c->fd = fd;
                ev.events = EPOLLIN;
                ev.data.ptr = c;
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                continue;
            }
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);

            if (r <= 0 || (c->len += (size_t)r, serve(c) < 0)) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                free(c);
            }
        }
    }
}
