//! An HTTP server that answers every request with one recorded response: for provider
//! behaviour the local store does not reproduce (it creates missing buckets on upload, and
//! answers an unknown access key with AccessDenied), using the exact error bodies AWS S3 sends.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// (text to find in the request line, status, headers, body).
pub type Answer<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], &'a str);

#[derive(Debug)]
pub struct CannedHttp {
    url: String,
    task: JoinHandle<()>,
}

impl CannedHttp {
    pub async fn start(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Self::start_by(&[("", status, headers, body)]).await
    }

    /// Answers each request with the first entry whose text occurs in its request line
    /// (`"POST "`, `"partNumber="`, …; `""` matches everything).
    pub async fn start_by(answers: &[Answer<'_>]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let answers: Vec<(String, String)> = answers
            .iter()
            .map(|(matching, status, headers, body)| {
                let mut response = format!(
                    "HTTP/1.1 {status} Canned\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (name, value) in *headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(body);
                ((*matching).to_owned(), response)
            })
            .collect();
        let answers = std::sync::Arc::new(answers);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answers = std::sync::Arc::clone(&answers);
                tokio::spawn(async move {
                    // Read the request head and body (by content-length), then answer.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let line = String::from_utf8_lossy(&request)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let Some((_, response)) =
                        answers.iter().find(|(m, _)| line.contains(m.as_str()))
                    else {
                        return;
                    };
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { url, task }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for CannedHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// AWS S3's XML error body for `code`.
pub fn s3_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>4442587FB7D0A2F9</RequestId><HostId>zipkit-test</HostId></Error>"
    )
}
